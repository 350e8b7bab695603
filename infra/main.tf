# stocktrade on Google Cloud. Terraform owns infrastructure and IAM; Cloud Build deploys code.
# The event-chain functions, the GPU service, the ingester and Scheduler jobs are added by
# the issues that build them.

locals {
  topics = {
    "market-bars"     = { ordering = true }
    "signals"         = { ordering = true }
    "orders"          = { ordering = true }
    "fills"           = { ordering = true }
    "news"            = { ordering = false }
    "model-promoted"  = { ordering = true }
    "scheduler-ticks" = { ordering = false }
  }
  image_base = "${var.region}-docker.pkg.dev/${var.project_id}/stocktrade"
}

# -- Object store: policies, TensorBoard logs, backtest artifacts --------------------------
resource "google_storage_bucket" "artifacts" {
  name                        = "${var.project_id}-stocktrade-artifacts"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
}

# -- Events ---------------------------------------------------------------------------------
resource "google_pubsub_topic" "topics" {
  for_each                   = local.topics
  name                       = each.key
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic" "dead_letters" {
  name = "dead-letters"
}

# -- System of record: Cloud SQL Postgres with pgvector (CREATE EXTENSION in migration 0001)
resource "google_sql_database_instance" "main" {
  name                = "stocktrade"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = true
  settings {
    edition           = "ENTERPRISE"
    tier              = var.sql_tier
    availability_type = "ZONAL"
    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }
    ip_configuration {
      ipv4_enabled = false
      ssl_mode     = "ENCRYPTED_ONLY"
    }
    database_flags {
      name  = "max_prepared_transactions"
      value = "16"
    }
  }
}

resource "google_sql_database" "stocktrade" {
  name     = "stocktrade"
  instance = google_sql_database_instance.main.name
}

resource "google_secret_manager_secret" "database_url" {
  secret_id = "stocktrade-database-url"
  replication {
    auto {}
  }
}

# -- One service account per workload ------------------------------------------------------
resource "google_service_account" "jobs" {
  account_id   = "stocktrade-jobs"
  display_name = "stocktrade train and backtest jobs"
}

resource "google_storage_bucket_iam_member" "jobs_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_pubsub_topic_iam_member" "jobs_publish_promoted" {
  topic  = google_pubsub_topic.topics["model-promoted"].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_secret_manager_secret_iam_member" "jobs_database_url" {
  secret_id = google_secret_manager_secret.database_url.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.jobs.email}"
}

resource "google_project_iam_member" "jobs_sql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.jobs.email}"
}

# -- Cloud Run Jobs: training and backtests -------------------------------------------------
resource "google_cloud_run_v2_job" "jobs" {
  for_each = {
    train    = { module = "jobs.train.main", cpu = "4", memory = "8Gi", timeout = "7200s" }
    backtest = { module = "jobs.backtest.main", cpu = "2", memory = "4Gi", timeout = "1800s" }
  }
  name     = "stocktrade-${each.key}"
  location = var.region

  template {
    task_count = 1
    template {
      service_account = google_service_account.jobs.email
      timeout         = each.value.timeout
      max_retries     = 1
      containers {
        image   = "${local.image_base}/jobs:${var.image_tag}"
        command = ["python", "-m", each.value.module]
        resources {
          limits = {
            cpu    = each.value.cpu
            memory = each.value.memory
          }
        }
        env {
          name  = "STOCKTRADE_ENV"
          value = "prod"
        }
        env {
          name  = "STOCKTRADE_BUS"
          value = "pubsub"
        }
        env {
          name  = "STOCKTRADE_OBJECT_STORE_URL"
          value = "gs://${google_storage_bucket.artifacts.name}"
        }
        env {
          name = "DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.database_url.secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }
}
