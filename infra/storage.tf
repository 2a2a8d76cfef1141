# Documents. Shared keys are disabled: every reader and writer uses an Entra identity and a data
# role; uploads from the portal get user-delegation SAS URLs.
resource "azurerm_storage_account" "documents" {
  name                              = "st${local.name}"
  resource_group_name               = azurerm_resource_group.main.name
  location                          = azurerm_resource_group.main.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  infrastructure_encryption_enabled = true
  public_network_access_enabled     = true
  tags                              = var.tags

  blob_properties {
    # The portal uploads large files straight from the browser with a short-lived SAS URL
    # (POST /api/uploads): the browser's cross-origin PUT needs this rule, for the portal only.
    cors_rule {
      allowed_origins    = ["https://${var.gateway_host}"]
      allowed_methods    = ["PUT", "OPTIONS"]
      allowed_headers    = ["x-ms-blob-type", "x-ms-blob-content-type", "content-type", "x-ms-version", "x-ms-client-request-id"]
      exposed_headers    = ["etag", "x-ms-request-id"]
      max_age_in_seconds = 3600
    }
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "00.01:00:00"
    expiration_action = "Log"
  }
}

resource "azurerm_storage_container" "documents" {
  name                  = var.documents_container
  storage_account_id    = azurerm_storage_account.documents.id
  container_access_type = "private"
}

# Every blob created or deleted in the documents container becomes a message on the ingest queue,
# in the Event Grid schema the ingest worker parses. Event Grid delivers as the system topic's
# managed identity (Service Bus Data Sender on that queue, identity.tf).
resource "azurerm_eventgrid_system_topic" "documents" {
  name                = "evgt-${local.name}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_storage_account.documents.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  tags                = var.tags

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_eventgrid_system_topic_event_subscription" "ingest" {
  name                          = "documents-to-ingest"
  system_topic                  = azurerm_eventgrid_system_topic.documents.name
  resource_group_name           = azurerm_resource_group.main.name
  service_bus_queue_endpoint_id = azurerm_servicebus_queue.ingest.id
  event_delivery_schema         = "EventGridSchema"
  included_event_types          = ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${var.documents_container}/"
  }

  delivery_identity {
    type = "SystemAssigned"
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }

  depends_on = [azurerm_role_assignment.eventgrid_sender]
}
