# Sign-in: one app registration is both the gateway's API (the audience of the access tokens the
# gateway accepts, scope access_as_user) and the portal, a single-page application that signs
# users in with the authorization code flow and PKCE (MSAL.js) and asks for that scope. Its
# values reach the gateway through azure.env (overlay.tf): PARLEY_ENTRA_TENANT_ID,
# PARLEY_ENTRA_AUDIENCE (the application ID URI) and PARLEY_ENTRA_CLIENT_ID.
data "azuread_client_config" "current" {}

resource "random_uuid" "gateway_scope" {}

resource "azuread_application" "gateway" {
  display_name     = "Parley ${local.name}"
  sign_in_audience = "AzureADMyOrg"
  owners           = [data.azuread_client_config.current.object_id]

  api {
    # v2 access tokens (issuer login.microsoftonline.com/<tenant>/v2.0, audience the client id);
    # the gateway also accepts v1 ones (sts.windows.net/<tenant>/, the application ID URI).
    requested_access_token_version = 2

    oauth2_permission_scope {
      id                         = random_uuid.gateway_scope.result
      value                      = "access_as_user"
      type                       = "User"
      enabled                    = true
      admin_consent_display_name = "Use Parley"
      admin_consent_description  = "Lets the Parley portal call the Parley gateway as the signed-in user."
      user_consent_display_name  = "Use Parley"
      user_consent_description   = "Lets the Parley portal call Parley as you."
    }
  }

  # The portal is served by the gateway at https://<gateway_host>/ and comes back there.
  single_page_application {
    redirect_uris = ["https://${var.gateway_host}/"]
  }

  # Managed by the azuread_application_identifier_uri and _api_access resources below.
  lifecycle {
    ignore_changes = [identifier_uris, required_resource_access]
  }
}

# api://<client id>: the default form, which tenants that restrict custom URIs still accept.
resource "azuread_application_identifier_uri" "gateway" {
  application_id = azuread_application.gateway.id
  identifier_uri = "api://${azuread_application.gateway.client_id}"
}

# The portal asks for the gateway's own scope.
resource "azuread_application_api_access" "portal_to_gateway" {
  application_id = azuread_application.gateway.id
  api_client_id  = azuread_application.gateway.client_id
  scope_ids      = [random_uuid.gateway_scope.result]
}

resource "azuread_service_principal" "gateway" {
  client_id                    = azuread_application.gateway.client_id
  app_role_assignment_required = false
  owners                       = [data.azuread_client_config.current.object_id]
}

# Azure CLI (Microsoft's first-party client) may ask for the scope without a consent prompt, so
# that scripts and the OpenAI-compatible face's clients get a token with
# `az account get-access-token --scope api://<client id>/access_as_user`.
resource "azuread_application_pre_authorized" "azure_cli" {
  application_id       = azuread_application.gateway.id
  authorized_client_id = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
  permission_ids       = [random_uuid.gateway_scope.result]
}
