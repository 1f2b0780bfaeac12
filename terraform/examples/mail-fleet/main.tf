# A mail fleet: inbound SMTP behind three balancers, an injection API and an
# engagement-tracking endpoint (opens and clicks), each behind weighted records that
# r53lb keeps in line with health, and a single outbound relay with a hot standby.
# Addresses are documentation ranges (RFC 5737, RFC 3849): put your own in.

# Inbound mail: the domain's MX points at mx.DOMAIN, which the three SMTP balancers
# share by weight. hlb-3 is smaller and takes half the share of the others.
module "mx" {
  source = "../../modules/weighted-pool"

  zone_id   = var.zone_id
  name      = "mx.${var.domain}"
  pool_name = "smtp-inbound"
  nodes = {
    hlb-1 = { address = ["192.0.2.10", "2001:db8::10"], weight = 100 }
    hlb-2 = { address = ["192.0.2.11", "2001:db8::11"], weight = 100 }
    hlb-3 = { address = ["192.0.2.12"], weight = 50 }
  }
  checks = [
    { smtp = { port = 25, starttls = true } },
  ]
  pool_options = {
    min_in_service      = 2
    max_drain_per_cycle = 1
    slow_start          = "5m"
  }
}

# The MX record itself is static: it names mx.DOMAIN, whose weights move.
resource "aws_route53_record" "mx" {
  zone_id = var.zone_id
  name    = var.domain
  type    = "MX"
  ttl     = 3600
  records = ["10 mx.${var.domain}"]
}

# The injection API (HTTP submission of outgoing mail).
module "api" {
  source = "../../modules/weighted-pool"

  zone_id   = var.zone_id
  name      = "api.${var.domain}"
  pool_name = "injection-api"
  nodes = {
    api-1 = { address = ["192.0.2.30"], weight = 50 }
    api-2 = { address = ["192.0.2.31"], weight = 50 }
  }
  checks = [
    { http = { url = "https://{address}/health", host = "api.${var.domain}", expect_status = [200] } },
  ]
}

# Engagement tracking: the open pixel and click redirects in every message sent.
module "tracking" {
  source = "../../modules/weighted-pool"

  zone_id   = var.zone_id
  name      = "click.${var.domain}"
  pool_name = "tracking"
  nodes = {
    click-1 = { address = ["192.0.2.40"], weight = 50 }
    click-2 = { address = ["192.0.2.41"], weight = 50 }
  }
  checks = [
    { http = { url = "https://{address}/healthz", host = "click.${var.domain}", expect_status = ["2xx"] } },
  ]
}

# The outbound relay: one server active, one standby that takes over.
module "smtp_ha" {
  source = "../../modules/failover-pair"

  zone_id   = var.zone_id
  name      = "smtp.${var.domain}"
  pool_name = "mta-ha"
  primary   = { id = "primary", address = ["192.0.2.20"] }
  standby   = { id = "standby", address = ["192.0.2.21"] }
  checks = [
    { smtp = { port = 587, starttls = true } },
  ]
  preempt_delay = "5m"
}

# What the controller may do: change exactly these records' weights, nothing else.
module "controller_iam" {
  source = "../../modules/controller-iam"

  name = "r53lb-mail-fleet"
  records = concat(
    module.mx.managed_records,
    module.api.managed_records,
    module.tracking.managed_records,
    module.smtp_ha.managed_records,
  )
  zones         = { (var.zone_id) = var.domain } # r53lb's fence: the TXT record _r53lb.DOMAIN
  sns_topic_arn = var.sns_topic_arn

  state_table_arn = module.controller_state.table_arn
  state_replicas  = var.replicas
}

# Two replicas or more (var.replicas): they share this table; the lease holder writes.
module "controller_state" {
  source = "../../modules/controller-state"

  create = length(var.replicas) > 0
  name   = "r53lb-mail-fleet"
}

locals {
  # The controller's whole config, rendered from the same inputs as the records.
  r53lb_config = {
    for key, value in {
      defaults = var.probe_helo == null ? null : { helo = var.probe_helo }
      notify   = var.sns_topic_arn == null ? null : { sns = { topic_arn = var.sns_topic_arn } }
      # Each replica is named by its hostname (cluster.replica's default): one config for all.
      cluster = length(var.replicas) == 0 ? null : { backend = "dynamodb", table = "r53lb-mail-fleet", region = var.region }
      pools = [
        module.mx.r53lb_pool,
        module.api.r53lb_pool,
        module.tracking.r53lb_pool,
        module.smtp_ha.r53lb_pool,
      ]
    } : key => value if value != null
  }
}
