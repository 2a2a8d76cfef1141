# Key Vault (Azure RBAC): the Redis access key, and the gateway's TLS certificate that the
# application routing add-on reads (import it as certificate "parley-gateway", docs/deploy.md)
# and syncs into the Secret keyvault-parley-gateway that the Ingress names.
resource "azurerm_key_vault" "main" {
  name                          = "kv-${local.name}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 7
  public_network_access_enabled = true
  tags                          = var.tags

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# Whoever runs Terraform writes the secret below.
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# A new role assignment takes minutes to reach Key Vault's data plane; writing the secret at once
# fails with 403 on a fresh deployment. depends_on alone only orders the calls.
resource "time_sleep" "deployer_secrets_officer_propagation" {
  create_duration = "180s"
  depends_on      = [azurerm_role_assignment.deployer_secrets_officer]
}

# A record of the key for rotation and audits; the cluster's Secrets come from the files
# overlay.tf writes.
resource "azurerm_key_vault_secret" "redis_key" {
  name         = "parley-redis-key"
  value        = azurerm_managed_redis.main.default_database[0].primary_access_key
  key_vault_id = azurerm_key_vault.main.id
  content_type = "Azure Managed Redis access key"
  tags         = var.tags

  depends_on = [time_sleep.deployer_secrets_officer_propagation]
}

# The application routing add-on reads the gateway's certificate.
resource "azurerm_role_assignment" "app_routing_certificates" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_kubernetes_cluster.main.web_app_routing[0].web_app_routing_identity[0].object_id
  principal_type       = "ServicePrincipal"
}
