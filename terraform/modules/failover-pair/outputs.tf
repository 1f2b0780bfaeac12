output "r53lb_pool" {
  description = "The r53lb pool (an object) in failover mode that manages these record sets, primary first. Compose it into a config's `pools` list."
  value       = local.r53lb_pool

  precondition {
    condition     = var.primary.id != var.standby.id
    error_message = "The primary and the standby need different ids (they are the record sets' SetIdentifiers)."
  }
}

output "r53lb_pool_yaml" {
  description = "The same pool rendered as YAML (one entry of a config's `pools` list)."
  value       = yamlencode(local.r53lb_pool)
}

output "r53lb_config_yaml" {
  description = "A complete r53lb config file with this pool alone; `r53lb validate` accepts it once `checks` is set."
  value       = yamlencode({ pools = [local.r53lb_pool] })
}

output "managed_records" {
  description = "The record names and types r53lb changes for this pair, ready for the controller-iam module's `records`."
  value       = module.records.managed_records
}

output "record_sets" {
  description = "The record sets created, keyed \"<node id>/<type>\"."
  value       = module.records.record_sets
}
