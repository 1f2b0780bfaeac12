output "r53lb_pool" {
  description = "The r53lb pool (an object) that manages these record sets: name, zone (the zone id), record, type, ttl, mode, checks and nodes (id, address, weight, probe_address). Compose it into a config's `pools` list."
  value       = local.r53lb_pool
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
  description = "The record names and types r53lb changes for this pool (one entry per record type), ready for the controller-iam module's `records`."
  value = [
    for type in local.record_types : {
      zone_id = var.zone_id
      name    = local.record_name
      type    = type
    }
  ]
}

output "record_sets" {
  description = "The record sets created, keyed \"<node id>/<type>\": name, type, set_identifier, value and the weight written at creation."
  value = {
    for key, record in aws_route53_record.node : key => {
      name           = record.name
      type           = record.type
      set_identifier = record.set_identifier
      value          = one(record.records)
      initial_weight = local.record_sets[key].weight
    }
  }
}

output "addresses" {
  description = "Each node's addresses as published and rendered, keyed by node id: IPv6 in RFC 5952 form (2001:0DB8::0001 becomes 2001:db8::1), hostnames in lowercase without the trailing dot."
  value       = local.addresses
}
