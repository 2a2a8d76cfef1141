# Terraform writes the AKS overlay's inputs itself, so that nothing is copied by hand:
#   k8s/overlays/aks/azure.env               PARLEY_* endpoints and names (ConfigMap parley-env)
#   k8s/overlays/aks/identities.env          client ids, names, image repository (replacements)
#   k8s/overlays/aks/secrets/parley.env      PARLEY_REDIS_URL (Secret parley-secrets)
#   k8s/overlays/aks/secrets/redis-keda.env  KEDA's Redis address and password
# The secrets files are git-ignored and readable by their owner only. The Redis access key is
# URL-encoded in the URL: Azure's keys are base64 and may hold '/', '+' and '=', which redis-py
# and kombu would otherwise read as the end of the password or a path.
locals {
  overlay_dir = "${path.module}/../k8s/overlays/aks"
  redis_key   = azurerm_managed_redis.main.default_database[0].primary_access_key
  redis_host  = azurerm_managed_redis.main.hostname
  redis_port  = azurerm_managed_redis.main.default_database[0].port
  parley_secrets = {
    PARLEY_REDIS_URL = "rediss://:${urlencode(local.redis_key)}@${local.redis_host}:${local.redis_port}/0"
  }
  redis_keda = {
    address  = "${local.redis_host}:${local.redis_port}"
    password = local.redis_key
  }
  generated = "# Written by terraform apply (infra/overlay.tf): do not edit.\n"
}

resource "local_file" "azure_env" {
  filename        = "${local.overlay_dir}/azure.env"
  file_permission = "0644"
  content         = "${local.generated}${join("\n", [for k, v in local.parley_env : "${k}=${v}"])}\n"
}

resource "local_file" "identities_env" {
  filename        = "${local.overlay_dir}/identities.env"
  file_permission = "0644"
  content         = "${local.generated}${join("\n", [for k, v in local.overlay_env : "${k}=${v}"])}\n"
}

resource "local_sensitive_file" "parley_secrets_env" {
  filename        = "${local.overlay_dir}/secrets/parley.env"
  file_permission = "0600"
  content         = "${local.generated}${join("\n", [for k, v in local.parley_secrets : "${k}=${v}"])}\n"
}

resource "local_sensitive_file" "redis_keda_env" {
  filename        = "${local.overlay_dir}/secrets/redis-keda.env"
  file_permission = "0600"
  content         = "${local.generated}${join("\n", [for k, v in local.redis_keda : "${k}=${v}"])}\n"
}
