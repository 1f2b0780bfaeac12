locals {
  record_name = lower(trimsuffix(var.name, "."))

  # Each node's addresses in one canonical form, the same in the record sets and in the
  # rendered config: IPv6 compressed and lowercase as RFC 5952 writes it (cidrhost returns
  # that form), so 2001:0DB8:0:0:0:0:0:1 and 2001:db8::1 are one value; hostnames in lowercase
  # without the trailing dot.
  addresses = {
    for id, node in var.nodes : id => [
      for address in node.address :
      length(regexall(":", address)) > 0 ? cidrhost("${address}/128", 0) : lower(trimsuffix(address, "."))
    ]
  }

  # One record set per node and address family, keyed "<node id>/<record type>".
  record_sets = {
    for set in flatten([
      for id, node in var.nodes : [
        for address in local.addresses[id] : {
          set_identifier = id
          type           = length(regexall(":", address)) > 0 ? "AAAA" : (can(regex("^[0-9.]+$", address)) ? "A" : "CNAME")
          value          = address
          weight         = node.initial_weight != null ? node.initial_weight : node.weight
        }
      ]
    ]) : "${set.set_identifier}/${set.type}" => set
  }

  record_types = sort(distinct([for set in values(local.record_sets) : set.type]))

  # The r53lb pool that manages exactly these record sets. Keys whose value is null
  # are left out: r53lb refuses an explicit null where it expects a value.
  r53lb_pool = merge(var.pool_options, {
    for key, value in {
      name   = var.pool_name != null ? var.pool_name : local.record_name
      zone   = var.zone_id
      record = local.record_name
      type   = var.type
      ttl    = var.ttl
      mode   = "weighted"
      checks = var.checks
      nodes = [
        for id, node in var.nodes : {
          for key, value in {
            id            = id
            address       = local.addresses[id]
            weight        = node.weight
            probe_address = node.probe_address
          } : key => value if value != null
        }
      ]
    } : key => value if value != null
  })
}

resource "aws_route53_record" "node" {
  #checkov:skip=CKV2_AWS_23:The records publish mail servers by address (often outside AWS); there is no AWS resource to attach them to.
  for_each = local.record_sets

  zone_id        = var.zone_id
  name           = local.record_name
  type           = each.value.type
  ttl            = var.ttl
  records        = [each.value.value]
  set_identifier = each.value.set_identifier

  weighted_routing_policy {
    weight = each.value.weight
  }

  lifecycle {
    # r53lb owns the weights once the record sets exist: it rewrites them with every
    # change of health. Terraform keeps name, type, TTL and value, and never puts a
    # weight back (which would send mail to a node r53lb has drained).
    ignore_changes = [weighted_routing_policy]

    precondition {
      condition     = (var.type == "CNAME") == (each.value.type == "CNAME")
      error_message = "A CNAME pool lists one hostname per node; an A or AAAA pool lists IP addresses."
    }
  }
}
