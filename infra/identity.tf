# One user-assigned identity per workload, federated with its Kubernetes ServiceAccount
# (k8s/base/serviceaccounts.yaml), and only the data roles it needs, each on the narrowest scope.
locals {
  workloads = {
    gateway     = { namespace = var.namespace, service_account = "parley-gateway" }
    ingest      = { namespace = var.namespace, service_account = "parley-ingest" }
    embed       = { namespace = var.namespace, service_account = "parley-embed" }
    inference   = { namespace = var.namespace, service_account = "parley-inference" }
    maintenance = { namespace = var.namespace, service_account = "parley-maintenance" }
    # The KEDA add-on's operator reads queue lengths and Prometheus as this identity.
    keda = { namespace = "kube-system", service_account = "keda-operator" }
  }

  scopes = {
    documents = azurerm_storage_container.documents.id
    account   = azurerm_storage_account.documents.id
    ingest    = azurerm_servicebus_queue.ingest.id
    embed     = azurerm_servicebus_queue.embed.id
    openai    = azurerm_cognitive_account.openai.id
  }

  grants = [
    # The portal uploads documents (user-delegation SAS) and re-emits an ingest request on retry;
    # retrieval embeds the question.
    { workload = "gateway", role = "Storage Blob Data Contributor", scope = "documents" },
    # A user delegation key (to sign the SAS) can only be asked for at the account scope; this
    # role grants that one action and no data access.
    { workload = "gateway", role = "Storage Blob Delegator", scope = "account" },
    { workload = "gateway", role = "Azure Service Bus Data Sender", scope = "ingest" },
    { workload = "gateway", role = "Cognitive Services OpenAI User", scope = "openai" },
    # Ingest reads blobs and its queue, and sends chunk batches on.
    { workload = "ingest", role = "Storage Blob Data Reader", scope = "documents" },
    { workload = "ingest", role = "Azure Service Bus Data Receiver", scope = "ingest" },
    { workload = "ingest", role = "Azure Service Bus Data Sender", scope = "embed" },
    # Embed reads its queue and calls the embedding deployment.
    { workload = "embed", role = "Azure Service Bus Data Receiver", scope = "embed" },
    { workload = "embed", role = "Cognitive Services OpenAI User", scope = "openai" },
    # Inference calls the chat deployment.
    { workload = "inference", role = "Cognitive Services OpenAI User", scope = "openai" },
    # Maintenance lists blobs to reconcile, re-emits missed events, and reads, replays and purges
    # dead letters of both queues; re-embedding calls the embedding deployment.
    { workload = "maintenance", role = "Storage Blob Data Reader", scope = "documents" },
    { workload = "maintenance", role = "Azure Service Bus Data Sender", scope = "ingest" },
    { workload = "maintenance", role = "Azure Service Bus Data Receiver", scope = "ingest" },
    { workload = "maintenance", role = "Azure Service Bus Data Sender", scope = "embed" },
    { workload = "maintenance", role = "Azure Service Bus Data Receiver", scope = "embed" },
    { workload = "maintenance", role = "Cognitive Services OpenAI User", scope = "openai" },
    # KEDA's Service Bus scaler reads queue runtime properties, which needs the Owner data role;
    # it is held on the two queues only.
    { workload = "keda", role = "Azure Service Bus Data Owner", scope = "ingest" },
    { workload = "keda", role = "Azure Service Bus Data Owner", scope = "embed" },
  ]
}

resource "azurerm_user_assigned_identity" "workload" {
  for_each            = local.workloads
  name                = "id-${local.name}-${each.key}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = var.tags
}

resource "azurerm_federated_identity_credential" "workload" {
  for_each            = local.workloads
  name                = "fic-${each.key}"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.workload[each.key].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject             = "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
}

resource "azurerm_role_assignment" "workload" {
  for_each             = { for g in local.grants : "${g.workload}/${g.role}/${g.scope}" => g }
  scope                = local.scopes[each.value.scope]
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.workload[each.value.workload].principal_id
  principal_type       = "ServicePrincipal"
}

# Event Grid delivers blob events to the ingest queue as the system topic's identity.
resource "azurerm_role_assignment" "eventgrid_sender" {
  scope                = azurerm_servicebus_queue.ingest.id
  role_definition_name = "Azure Service Bus Data Sender"
  principal_id         = azurerm_eventgrid_system_topic.documents.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# Nodes pull Parley's image from the registry.
resource "azurerm_role_assignment" "kubelet_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
  principal_type       = "ServicePrincipal"
}
