# The same record sets as any weighted pool: the primary is created with weight 1,
# the standby with 0. From then on r53lb gives the weight to the first healthy server in
# the order primary, standby (failover mode) and Terraform leaves the weights alone.
module "records" {
  source = "../weighted-pool"

  zone_id = var.zone_id
  name    = var.name
  type    = var.type
  ttl     = var.ttl
  nodes = {
    (var.primary.id) = { address = var.primary.address, initial_weight = 1, probe_address = var.primary.probe_address }
    (var.standby.id) = { address = var.standby.address, initial_weight = 0, probe_address = var.standby.probe_address }
  }
}

locals {
  record_name = lower(trimsuffix(var.name, "."))

  # Order matters in failover mode: the primary is listed first. Both carry base
  # weight 1: in failover mode only the active server has weight, the other has 0.
  r53lb_pool = merge(var.pool_options, {
    for key, value in {
      name          = var.pool_name != null ? var.pool_name : local.record_name
      zone          = var.zone_id
      record        = local.record_name
      type          = var.type
      ttl           = var.ttl
      mode          = "failover"
      preempt       = var.preempt
      preempt_delay = var.preempt_delay
      checks        = var.checks
      nodes = [
        for server in [var.primary, var.standby] : {
          for key, value in {
            id            = server.id
            address       = module.records.addresses[server.id]
            weight        = 1
            probe_address = server.probe_address
          } : key => value if value != null
        }
      ]
    } : key => value if value != null
  })
}
