output "artifacts_bucket" {
  value = google_storage_bucket.artifacts.name
}

output "sql_connection_name" {
  value = google_sql_database_instance.main.connection_name
}
