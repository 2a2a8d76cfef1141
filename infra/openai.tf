# Azure OpenAI with Entra ID only (no API keys): workers call it as their workload identities with
# the Cognitive Services OpenAI User role.
resource "azurerm_cognitive_account" "openai" {
  name                          = "oai-${local.name}"
  resource_group_name           = azurerm_resource_group.main.name
  location                      = var.openai_location
  kind                          = "OpenAI"
  sku_name                      = "S0"
  custom_subdomain_name         = "oai-${local.name}"
  local_auth_enabled            = false
  public_network_access_enabled = true
  # The account calls nothing outside itself.
  outbound_network_access_restricted = true
  fqdns                              = []
  tags                               = var.tags

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_cognitive_deployment" "chat" {
  name                 = var.openai_chat_deployment
  cognitive_account_id = azurerm_cognitive_account.openai.id

  model {
    format  = "OpenAI"
    name    = var.openai_chat_model.name
    version = var.openai_chat_model.version
  }

  sku {
    name     = "GlobalStandard"
    capacity = var.openai_chat_capacity
  }
}

resource "azurerm_cognitive_deployment" "embedding" {
  name                 = var.openai_embedding_deployment
  cognitive_account_id = azurerm_cognitive_account.openai.id

  model {
    format  = "OpenAI"
    name    = var.openai_embedding_model.name
    version = var.openai_embedding_model.version
  }

  sku {
    name     = "Standard"
    capacity = var.openai_embedding_capacity
  }
}
