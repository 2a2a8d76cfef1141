"""Kubernetes NetworkPolicy semantics, evaluated offline over rendered manifests.

A pod is isolated for a direction when some policy in its namespace selects it and lists that
direction in ``policyTypes``; an isolated pod allows a connection when any of those policies has
a rule whose peer matches the other end and whose ports include the port. Peers: ``podSelector``
alone means pods of the policy's namespace, ``namespaceSelector`` alone all pods of the matching
namespaces, both together the matching pods of the matching namespaces, ``ipBlock`` addresses
outside the cluster (a CIDR minus its ``except`` ranges; pod addresses are never matched, as
Cilium treats ipBlock). Ports: none listed means every port; a named port is the destination
container's port of that name; ``endPort`` makes a range.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: where it lives, its labels, its named container ports."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # name -> (port, proto)

    def port_numbers(self) -> set[tuple[int, str]]:
        return set(self.ports.values())


@dataclass(frozen=True)
class External:
    """An address outside the cluster (a public Azure endpoint)."""

    address: str = "20.60.1.1"
    name: str = "internet"


Peer = Pod | External


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against a label set; an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(
    peer: Doc, policy_ns: str, other: Peer, namespace_labels: Mapping[str, Mapping[str, str]]
) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        address = ipaddress.ip_address(other.address)
        block = peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if isinstance(other, External):
        return False
    if "namespaceSelector" in peer:
        ns_labels = namespace_labels.get(
            other.namespace, {"kubernetes.io/metadata.name": other.namespace}
        )
        if not selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], other.labels)


def _port_matches(rule: Doc, port: int, protocol: str, destination: Peer) -> bool:
    entries = rule.get("ports")
    if not entries:
        return True
    for entry in entries:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if isinstance(destination, Pod) and destination.ports.get(wanted) == (port, protocol):
                return True
            continue
        if wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def _policies_for(policies: Iterable[Doc], pod: Pod, direction: str) -> list[Doc]:
    return [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and direction in _types(p)
        and selector_matches(p["spec"].get("podSelector"), pod.labels)
    ]


def _types(policy: Doc) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def egress_allowed(
    policies: Iterable[Doc],
    source: Pod,
    destination: Peer,
    port: int,
    protocol: str,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> bool:
    """Whether ``source``'s own policies let it open ``destination:port``."""
    selecting = _policies_for(policies, source, "Egress")
    if not selecting:
        return True
    return any(
        _port_matches(rule, port, protocol, destination)
        and (
            not rule.get("to")
            or any(
                _peer_matches(peer, source.namespace, destination, namespace_labels)
                for peer in rule["to"]
            )
        )
        for policy in selecting
        for rule in policy["spec"].get("egress") or []
    )


def ingress_allowed(
    policies: Iterable[Doc],
    source: Peer,
    destination: Pod,
    port: int,
    protocol: str,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> bool:
    """Whether ``destination``'s own policies accept a connection from ``source`` on ``port``."""
    selecting = _policies_for(policies, destination, "Ingress")
    if not selecting:
        return True
    return any(
        _port_matches(rule, port, protocol, destination)
        and (
            not rule.get("from")
            or any(
                _peer_matches(peer, destination.namespace, source, namespace_labels)
                for peer in rule["from"]
            )
        )
        for policy in selecting
        for rule in policy["spec"].get("ingress") or []
    )


def policy_ports(policies: Iterable[Doc]) -> set[tuple[int, str]]:
    """Every numeric port any rule names (the ports worth probing outside the cluster)."""
    found: set[tuple[int, str]] = set()
    for policy in policies:
        for rule in [*(policy["spec"].get("ingress") or []), *(policy["spec"].get("egress") or [])]:
            for entry in rule.get("ports") or []:
                if isinstance(entry.get("port"), int):
                    found.add((entry["port"], entry.get("protocol", "TCP")))
    return found
