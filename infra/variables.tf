variable "subscription_id" {
  description = "The Azure subscription to deploy into (az account show --query id -o tsv)."
  type        = string
}

variable "location" {
  description = "Azure region for everything but Azure OpenAI (see openai_location)."
  type        = string
  default     = "westeurope"
}

variable "name" {
  description = "Short name that prefixes every resource; a random suffix makes global names unique."
  type        = string
  default     = "parley"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,9}$", var.name))
    error_message = "3-10 lowercase letters and digits, starting with a letter (storage and registry names allow nothing else)."
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = { app = "parley" }
}

variable "namespace" {
  description = "Kubernetes namespace Parley runs in (k8s/base uses parley); the federated credentials name its service accounts."
  type        = string
  default     = "parley"
}

# --- AKS ------------------------------------------------------------------------------------------
variable "kubernetes_version" {
  description = "AKS Kubernetes version (minor); the manifests are validated against this version."
  type        = string
  default     = "1.34"
}

variable "aks_sku_tier" {
  description = "AKS control plane tier: Standard (uptime SLA) for production, Free for trials."
  type        = string
  default     = "Standard"
  validation {
    condition     = contains(["Free", "Standard", "Premium"], var.aks_sku_tier)
    error_message = "Free, Standard or Premium."
  }
}

variable "api_authorized_ip_ranges" {
  description = "CIDRs allowed to reach the Kubernetes API server (your office, CI). Empty allows all."
  type        = list(string)
  default     = []
}

variable "zones" {
  description = "Availability zones of the node pools (empty where the region has none)."
  type        = list(string)
  default     = ["1", "2", "3"]
}

variable "system_vm_size" {
  description = "VM size of the system pool (critical add-ons only: CoreDNS, KEDA, metrics, Kaito's controller)."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "user_vm_size" {
  description = "VM size of the user pool (Parley's gateway, workers, Chroma)."
  type        = string
  default     = "Standard_D8ds_v5"
}

variable "user_min_count" {
  description = "Minimum nodes of the user pool (the cluster autoscaler adds nodes as KEDA adds pods)."
  type        = number
  default     = 2
}

variable "user_max_count" {
  description = "Maximum nodes of the user pool."
  type        = number
  default     = 10
}

variable "gpu_pool_enabled" {
  description = "Add a GPU pool for the GPU embed worker (k8s/components/gpu-embed). Kaito provisions its own GPU nodes and does not need it."
  type        = bool
  default     = false
}

variable "gpu_vm_size" {
  description = "VM size of the optional GPU pool (needs GPU quota in the region)."
  type        = string
  default     = "Standard_NC4as_T4_v3"
}

variable "gpu_max_count" {
  description = "Maximum nodes of the optional GPU pool (it scales from zero)."
  type        = number
  default     = 2
}

# --- queues ---------------------------------------------------------------------------------------
variable "ingest_queue_name" {
  description = "Service Bus queue of blob events and ingest requests; must equal Settings().queues.ingest.name (parley-ingest)."
  type        = string
  default     = "parley-ingest"
}

variable "embed_queue_name" {
  description = "Service Bus queue of chunk batches; must equal Settings().queues.embed.name (parley-embed)."
  type        = string
  default     = "parley-embed"
}

variable "max_delivery_count" {
  description = "Deliveries before Service Bus dead-letters a message; equals Settings().queues.<q>.max_attempts (5)."
  type        = number
  default     = 5
}

# --- storage --------------------------------------------------------------------------------------
variable "documents_container" {
  description = "Blob container of uploaded documents; equals PARLEY_BLOB_CONTAINER (documents)."
  type        = string
  default     = "documents"
}

variable "storage_replication" {
  description = "Replication of the documents account (ZRS keeps a zone outage from losing uploads)."
  type        = string
  default     = "ZRS"
}

# --- Azure OpenAI ---------------------------------------------------------------------------------
variable "openai_location" {
  description = "Region of the Azure OpenAI account (model availability differs by region)."
  type        = string
  default     = "swedencentral"
}

variable "openai_chat_deployment" {
  description = "Name of the chat deployment; equals PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT."
  type        = string
  default     = "gpt-4o-mini"
}

variable "openai_chat_model" {
  description = "Chat model and version deployed under openai_chat_deployment."
  type        = object({ name = string, version = string })
  default     = { name = "gpt-4o-mini", version = "2024-07-18" }
}

variable "openai_chat_capacity" {
  description = "Chat deployment capacity in thousands of tokens per minute."
  type        = number
  default     = 100
}

variable "openai_embedding_deployment" {
  description = "Name of the embedding deployment; equals PARLEY_AZURE_OPENAI_EMBEDDING_DEPLOYMENT."
  type        = string
  default     = "text-embedding-3-small"
}

variable "openai_embedding_model" {
  description = "Embedding model and version deployed under openai_embedding_deployment."
  type        = object({ name = string, version = string })
  default     = { name = "text-embedding-3-small", version = "1" }
}

variable "openai_embedding_capacity" {
  description = "Embedding deployment capacity in thousands of tokens per minute (bulk ingestion is bound by it)."
  type        = number
  default     = 350
}

# --- Redis ----------------------------------------------------------------------------------------
variable "redis_sku" {
  description = "Azure Managed Redis SKU (chat queue, token streams, Celery broker)."
  type        = string
  default     = "Balanced_B1"
}

# --- gateway --------------------------------------------------------------------------------------
variable "gateway_host" {
  description = "Public host name of the portal and chat (a DNS record you point at the ingress)."
  type        = string
  default     = "parley.example.com"
}
