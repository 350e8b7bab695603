variable "project_id" {
  description = "Google Cloud project that hosts stocktrade."
  type        = string
}

variable "region" {
  description = "Region for every regional resource."
  type        = string
  default     = "us-central1"
}

variable "image_tag" {
  description = "Container image tag deployed by Cloud Build."
  type        = string
  default     = "latest"
}

variable "sql_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-1-3840"
}
