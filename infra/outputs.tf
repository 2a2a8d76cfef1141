# The inputs of k8s/overlays/aks, which overlay.tf writes into the overlay on every apply:
#   parley_env  -> k8s/overlays/aks/azure.env
#   overlay_env -> k8s/overlays/aks/identities.env
# (and the secrets, in overlay.tf only).
locals {
  parley_env = {
    PARLEY_SERVICEBUS_NAMESPACE              = "${azurerm_servicebus_namespace.main.name}.servicebus.windows.net"
    PARLEY_BLOB_ACCOUNT_URL                  = azurerm_storage_account.documents.primary_blob_endpoint
    PARLEY_AZURE_OPENAI_ENDPOINT             = azurerm_cognitive_account.openai.endpoint
    PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT      = azurerm_cognitive_deployment.chat.name
    PARLEY_AZURE_OPENAI_EMBEDDING_DEPLOYMENT = azurerm_cognitive_deployment.embedding.name
    PARLEY_ENTRA_TENANT_ID                   = data.azuread_client_config.current.tenant_id
    PARLEY_ENTRA_AUDIENCE                    = azuread_application_identifier_uri.gateway.identifier_uri
    PARLEY_ENTRA_CLIENT_ID                   = azuread_application.gateway.client_id
  }
  overlay_env = {
    IMAGE_REPOSITORY      = "${azurerm_container_registry.main.login_server}/parley"
    GATEWAY_CLIENT_ID     = azurerm_user_assigned_identity.workload["gateway"].client_id
    INGEST_CLIENT_ID      = azurerm_user_assigned_identity.workload["ingest"].client_id
    EMBED_CLIENT_ID       = azurerm_user_assigned_identity.workload["embed"].client_id
    INFERENCE_CLIENT_ID   = azurerm_user_assigned_identity.workload["inference"].client_id
    MAINTENANCE_CLIENT_ID = azurerm_user_assigned_identity.workload["maintenance"].client_id
    KEDA_CLIENT_ID        = azurerm_user_assigned_identity.workload["keda"].client_id
    SERVICEBUS_NAME       = azurerm_servicebus_namespace.main.name
    GATEWAY_HOST          = var.gateway_host
    TLS_CERT_KEYVAULT_URI = "${azurerm_key_vault.main.vault_uri}certificates/parley-gateway"
  }
}

output "parley_env" {
  description = "PARLEY_* settings of the AKS overlay (k8s/overlays/aks/azure.env)."
  value       = join("\n", [for k, v in local.parley_env : "${k}=${v}"])
}

output "overlay_env" {
  description = "Identities, names and endpoints the AKS overlay's replacements use (k8s/overlays/aks/identities.env)."
  value       = join("\n", [for k, v in local.overlay_env : "${k}=${v}"])
}

output "resource_group" {
  description = "The resource group holding everything."
  value       = azurerm_resource_group.main.name
}

output "cluster_name" {
  description = "AKS cluster name (az aks get-credentials -g <resource_group> -n <cluster_name>)."
  value       = azurerm_kubernetes_cluster.main.name
}

output "acr_name" {
  description = "Container registry to push the image to (az acr build -r <acr_name> ...)."
  value       = azurerm_container_registry.main.name
}

output "key_vault_name" {
  description = "Key Vault with the Redis key (secret parley-redis-key) and the gateway certificate."
  value       = azurerm_key_vault.main.name
}

output "redis_host" {
  description = "Azure Managed Redis host; Parley connects with TLS on redis_port (the URL is in k8s/overlays/aks/secrets/parley.env)."
  value       = azurerm_managed_redis.main.hostname
}

output "redis_port" {
  description = "Azure Managed Redis port (TLS)."
  value       = azurerm_managed_redis.main.default_database[0].port
}

output "entra_client_id" {
  description = "Client id of the gateway's app registration (the portal signs in with it)."
  value       = azuread_application.gateway.client_id
}

output "ingress_identity" {
  description = "Object id of the application routing add-on, which reads the TLS certificate."
  value       = azurerm_kubernetes_cluster.main.web_app_routing[0].web_app_routing_identity[0].object_id
}
