# Kaito (the AI toolchain operator add-on, aks.tf) provisions GPU nodes with its gpu-provisioner,
# which runs in kube-system as the service account kaito-gpu-provisioner and acts as the managed
# identity the add-on creates in the node resource group (ai-toolchain-operator-<cluster>). That
# identity needs a federated credential for the service account and the right to add node pools.
data "azurerm_user_assigned_identity" "kaito" {
  name                = "ai-toolchain-operator-${azurerm_kubernetes_cluster.main.name}"
  resource_group_name = azurerm_kubernetes_cluster.main.node_resource_group
}

resource "azurerm_federated_identity_credential" "kaito_gpu_provisioner" {
  name                = "kaito-gpu-provisioner"
  resource_group_name = azurerm_kubernetes_cluster.main.node_resource_group
  parent_id           = data.azurerm_user_assigned_identity.kaito.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject             = "system:serviceaccount:kube-system:kaito-gpu-provisioner"
}

# Creating GPU node pools in the cluster (the add-on's documented grant: Contributor on the
# cluster's resource group).
resource "azurerm_role_assignment" "kaito_gpu_provisioner" {
  scope                = azurerm_resource_group.main.id
  role_definition_name = "Contributor"
  principal_id         = data.azurerm_user_assigned_identity.kaito.principal_id
  principal_type       = "ServicePrincipal"
}
