"""Which paths a rendering of ``k8s/`` needs (tests/deploy/connections.py applied to the settings
each pod starts with) and which its NetworkPolicies allow (tests/deploy/netpol.py); the problems
are the differences: a needed path blocked in either direction, or an allowed path nobody needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from parley.settings import Settings

from . import checks
from .connections import (
    INGRESS_AKS,
    INGRESS_DEV,
    KEDA_AKS,
    KEDA_DEV,
    KUBE_DNS,
    PROMETHEUS_AKS,
    USES,
    Actor,
    Backend,
    clients,
    external_port,
    in_cluster_url,
    service_of,
)
from .kustomize import Doc
from .netpol import (
    External,
    Peer,
    Pod,
    egress_allowed,
    ingress_allowed,
    policy_ports,
    selector_matches,
)

COMPONENT = "app.kubernetes.io/component"
KAITO_LABEL = "kaito.sh/workspace"


@dataclass(frozen=True)
class Path:
    source: str
    destination: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}:{self.port}/{self.protocol}"


@dataclass
class Cluster:
    """The pods of one rendering (with the settings each starts with) and what is around them."""

    docs: list[Doc]
    ours: list[tuple[Pod, str, Settings]]  # (pod, component, settings)
    actors: list[Pod]
    policies: list[Doc]
    namespace_labels: dict[str, dict[str, str]]

    @property
    def pods(self) -> list[Pod]:
        return [p for p, _, _ in self.ours]

    def everyone(self) -> list[Pod]:
        return [*self.pods, *self.actors]


def _actor_pod(actor: Actor, ports: dict[str, tuple[int, str]] | None = None) -> Pod:
    return Pod(f"{actor.namespace}/{actor.name}", actor.namespace, dict(actor.labels), ports or {})


def cluster(docs: list[Doc]) -> Cluster:
    ours: list[tuple[Pod, str, Settings]] = []
    for wl in checks.of_kind(docs, *checks.WORKLOAD_KINDS):
        labels = checks.pod_labels(wl)
        ports = {
            p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
            for c in checks.pod_spec(wl)["containers"]
            for p in c.get("ports") or []
            if "name" in p
        }
        namespace = wl["metadata"]["namespace"]
        component = labels.get(COMPONENT, wl["metadata"]["name"])
        settings = checks.settings_for(checks.env_of(docs, wl))
        ours.append(
            (Pod(f"{namespace}/{component}", namespace, labels, ports), component, settings)
        )
    for ws in checks.of_kind(docs, "Workspace"):
        namespace, name = ws["metadata"]["namespace"], ws["metadata"]["name"]
        # Kaito labels a Workspace's pods kaito.sh/workspace=<name>; vLLM listens on 5000.
        pod = Pod(f"{namespace}/{name}", namespace, {KAITO_LABEL: name}, {"http": (5000, "TCP")})
        ours.append((pod, "kaito-vllm", checks.settings_for({})))
    namespace_labels = {
        ns["metadata"]["name"]: {
            "kubernetes.io/metadata.name": ns["metadata"]["name"],
            **(ns["metadata"].get("labels") or {}),
        }
        for ns in checks.of_kind(docs, "Namespace")
    }
    actors = [
        _actor_pod(KUBE_DNS, {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")}),
        _actor_pod(INGRESS_AKS),
        _actor_pod(INGRESS_DEV),
        _actor_pod(PROMETHEUS_AKS),
        _actor_pod(KEDA_AKS),
        _actor_pod(KEDA_DEV),
        # Strangers: any other pod, in Parley's namespaces and elsewhere, which nothing may let in
        # or out. They listen on a port so that egress towards them can be probed.
        *(
            Pod(f"{ns}/stranger", ns, {"app": "stranger"}, {"http": (8080, "TCP")})
            for ns in [*namespace_labels, "default", "kube-system"]
        ),
    ]
    return Cluster(docs, ours, actors, checks.of_kind(docs, "NetworkPolicy"), namespace_labels)


def _is_aks(docs: list[Doc]) -> bool:
    return any(
        i["spec"].get("ingressClassName") == "webapprouting.kubernetes.azure.com"
        for i in checks.of_kind(docs, "Ingress")
    )


def _service_targets(c: Cluster, url: str, client_ns: str) -> tuple[list[Pod], int] | None:
    name, namespace, port = service_of(url, client_ns)
    service = next(
        (
            s
            for s in checks.of_kind(c.docs, "Service")
            if s["metadata"]["name"] == name and s["metadata"]["namespace"] == namespace
        ),
        None,
    )
    if service is None:
        return None
    entry = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
    if entry is None:
        return None
    selector = {"matchLabels": service["spec"].get("selector") or {}}
    pods = [p for p in c.pods if p.namespace == namespace and selector_matches(selector, p.labels)]
    target = entry.get("targetPort", port)
    if isinstance(target, str):
        numbers = {p.ports[target][0] for p in pods if target in p.ports}
        if len(numbers) != 1:
            return None
        target = numbers.pop()
    return pods, int(target)


def needed(c: Cluster) -> tuple[dict[Path, str], list[str]]:
    """Every path the rendering needs, with why; and the connections that lead nowhere."""
    paths: dict[Path, str] = {}
    problems: list[str] = []
    for pod, component, settings in c.ours:
        uses = USES.get(component)
        if uses is None:
            problems.append(f"{pod.name}: component {component!r} is not in connections.USES")
            continue
        for backend, condition in uses.items():
            if not condition(settings):
                continue
            why = f"{component} uses {backend.value}"
            if backend is Backend.DNS:
                for protocol in ("UDP", "TCP"):
                    dns = f"{KUBE_DNS.namespace}/{KUBE_DNS.name}"
                    paths[Path(pod.name, dns, 53, protocol)] = why
                continue
            url = in_cluster_url(backend, settings)
            if url is not None:
                found = _service_targets(c, url, pod.namespace)
                if not found or not found[0]:
                    problems.append(f"{pod.name}: {backend.value} at {url} is served by no pod")
                    continue
                for target in found[0]:
                    paths[Path(pod.name, target.name, found[1], "TCP")] = why
                continue
            outside = external_port(backend, settings)
            if outside is None:
                problems.append(f"{pod.name}: {backend.value} has no address in its settings")
                continue
            paths[Path(pod.name, External().name, outside, "TCP")] = why
    scraped = checks.find(c.docs, "ConfigMap", "ama-metrics-prometheus-config") is not None
    in_cluster_redis = any(comp == "redis" for _, comp, _ in c.ours)
    for client in clients(_is_aks(c.docs), in_cluster_redis, scraped):
        source = f"{client.actor.namespace}/{client.actor.name}"
        for pod, component, _ in c.ours:
            if component in client.components and client.port_name in pod.ports:
                number, protocol = pod.ports[client.port_name]
                paths[Path(source, pod.name, number, protocol)] = (
                    f"{client.actor.name} {client.why}"
                )
    return paths, problems


def _by_name(c: Cluster) -> dict[str, Peer]:
    peers: dict[str, Peer] = {p.name: p for p in c.everyone()}
    peers[External().name] = External()
    return peers


def missing(c: Cluster, paths: dict[Path, str]) -> Iterator[str]:
    """Needed paths that the source's egress or the destination's ingress rules block."""
    peers = _by_name(c)
    for path, why in paths.items():
        source, destination = peers[path.source], peers[path.destination]
        assert isinstance(source, Pod)
        if not egress_allowed(
            c.policies, source, destination, path.port, path.protocol, c.namespace_labels
        ):
            yield f"missing egress: {path} ({why})"
        if isinstance(destination, Pod) and not ingress_allowed(
            c.policies, source, destination, path.port, path.protocol, c.namespace_labels
        ):
            yield f"missing ingress: {path} ({why})"


def unneeded(c: Cluster, paths: dict[Path, str]) -> Iterator[str]:
    """Paths the policies of Parley's pods allow that no connection needs, either direction."""
    external_ports = policy_ports(c.policies) | {
        (p.port, p.protocol) for p in paths if p.destination == External().name
    }
    for source in c.pods:
        destinations: list[Peer] = [*c.everyone(), External()]
        for destination in destinations:
            if destination == source:
                continue
            ports = destination.port_numbers() if isinstance(destination, Pod) else external_ports
            for port, protocol in sorted(ports):
                path = Path(source.name, destination.name, port, protocol)
                if path not in paths and egress_allowed(
                    c.policies, source, destination, port, protocol, c.namespace_labels
                ):
                    yield f"unneeded egress: {path}"
    for destination in c.pods:
        for source in c.everyone():
            if source == destination:
                continue
            for port, protocol in sorted(destination.port_numbers()):
                path = Path(source.name, destination.name, port, protocol)
                if path not in paths and ingress_allowed(
                    c.policies, source, destination, port, protocol, c.namespace_labels
                ):
                    yield f"unneeded ingress: {path}"


def check_reachability(docs: list[Doc]) -> list[str]:
    """Every needed path open both ways, and nothing else open."""
    c = cluster(docs)
    paths, problems = needed(c)
    return [*problems, *missing(c, paths), *unneeded(c, paths)]
