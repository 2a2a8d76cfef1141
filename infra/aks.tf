resource "azurerm_kubernetes_cluster" "main" {
  name                      = "aks-${local.name}"
  resource_group_name       = azurerm_resource_group.main.name
  location                  = azurerm_resource_group.main.location
  dns_prefix                = local.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = var.aks_sku_tier
  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"
  tags                      = var.tags

  # Pods reach Azure as Entra workload identities (OIDC issuer + federated credentials), and no
  # local admin account exists: access to the API is Entra ID + Azure RBAC.
  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  local_account_disabled            = true
  role_based_access_control_enabled = true
  azure_policy_enabled              = true
  image_cleaner_enabled             = true
  image_cleaner_interval_hours      = 48

  # Kaito (the AI toolchain operator add-on) serves open models on GPU nodes it provisions.
  ai_toolchain_operator_enabled = true

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = data.azurerm_client_config.current.tenant_id
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_authorized_ip_ranges
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    auto_scaling_enabled         = true
    min_count                    = 2
    max_count                    = 4
    max_pods                     = 50
    zones                        = var.zones
    os_sku                       = "AzureLinux"
    os_disk_type                 = "Ephemeral"
    os_disk_size_gb              = 100
    only_critical_addons_enabled = true
    temporary_name_for_rotation  = "systemtmp"

    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    # NetworkPolicies in k8s/ are enforced by Cilium.
    network_policy    = "cilium"
    load_balancer_sku = "standard"
  }

  # KEDA add-on: scales the workers on their queues (k8s/overlays/aks/scaling.yaml).
  workload_autoscaler_profile {
    keda_enabled = true
  }

  # Application routing add-on: the managed NGINX ingress controller (class
  # webapprouting.kubernetes.azure.com), with TLS certificates read from Key Vault.
  web_app_routing {
    dns_zone_ids = []
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.main.id
    msi_auth_for_monitoring_enabled = true
  }

  # Managed Prometheus (metrics to azurerm_monitor_workspace.main through the DCR in main.tf).
  monitor_metrics {}

  lifecycle {
    ignore_changes = [default_node_pool[0].node_count]
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "user" {
  name                  = "user"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  mode                  = "User"
  vm_size               = var.user_vm_size
  auto_scaling_enabled  = true
  min_count             = var.user_min_count
  max_count             = var.user_max_count
  max_pods              = 50
  zones                 = var.zones
  os_sku                = "AzureLinux"
  os_disk_type          = "Ephemeral"
  os_disk_size_gb       = 200
  node_labels           = { "parley.io/pool" = "user" }
  tags                  = var.tags

  upgrade_settings {
    max_surge = "33%"
  }
}

# Optional GPU pool for the GPU embed worker; scales from zero, tainted so only pods that
# tolerate sku=gpu (k8s/components/gpu-embed) land on it.
resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  count                 = var.gpu_pool_enabled ? 1 : 0
  name                  = "gpu"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.main.id
  mode                  = "User"
  vm_size               = var.gpu_vm_size
  auto_scaling_enabled  = true
  min_count             = 0
  max_count             = var.gpu_max_count
  max_pods              = 50
  os_sku                = "AzureLinux"
  node_labels           = { "parley.io/pool" = "gpu" }
  node_taints           = ["sku=gpu:NoSchedule"]
  tags                  = var.tags
}
