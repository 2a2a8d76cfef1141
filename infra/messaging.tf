# Durable work queues. Entra ID only (no SAS keys). Lock durations cover the slowest handler of
# each queue (a large PDF's extraction; a batch of embeddings with 429 back-off); the SDK renews
# locks for longer work. After max_delivery_count deliveries a message is dead-lettered, where
# `parley dlq` shows and replays it.
resource "azurerm_servicebus_namespace" "main" {
  name                          = "sb-${local.name}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku                           = "Standard"
  local_auth_enabled            = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = true
  tags                          = var.tags

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_servicebus_queue" "ingest" {
  name                                 = var.ingest_queue_name
  namespace_id                         = azurerm_servicebus_namespace.main.id
  lock_duration                        = "PT5M"
  max_delivery_count                   = var.max_delivery_count
  dead_lettering_on_message_expiration = true
  default_message_ttl                  = "P14D"
  max_size_in_megabytes                = 1024
}

resource "azurerm_servicebus_queue" "embed" {
  name                                 = var.embed_queue_name
  namespace_id                         = azurerm_servicebus_namespace.main.id
  lock_duration                        = "PT2M"
  max_delivery_count                   = var.max_delivery_count
  dead_lettering_on_message_expiration = true
  default_message_ttl                  = "P14D"
  max_size_in_megabytes                = 1024
}

# Azure Managed Redis: the chat queue (a Stream), token streams and Celery's broker. Queues must
# never be evicted (NoEviction) and Parley's client is not cluster-aware (NoCluster). Parley's
# Redis client authenticates with the access key, which lives in Key Vault (keyvault.tf).
resource "azurerm_managed_redis" "main" {
  name                      = "redis-${local.name}"
  resource_group_name       = azurerm_resource_group.main.name
  location                  = azurerm_resource_group.main.location
  sku_name                  = var.redis_sku
  high_availability_enabled = true
  public_network_access     = "Enabled"
  tags                      = var.tags

  default_database {
    access_keys_authentication_enabled            = true
    client_protocol                               = "Encrypted"
    clustering_policy                             = "NoCluster"
    eviction_policy                               = "NoEviction"
    persistence_append_only_file_backup_frequency = "1s"
  }
}
