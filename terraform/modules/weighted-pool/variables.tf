variable "zone_id" {
  description = "Id of the Route 53 hosted zone that holds the record (Z...). The rendered r53lb config names the zone by this id, so r53lb never has to look it up."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,32}$", var.zone_id))
    error_message = "The zone_id must be a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ (not the zone's name)."
  }
}

variable "name" {
  description = "Fully qualified DNS name of the weighted record, e.g. mx.example.com. A trailing dot is accepted and dropped."
  type        = string

  validation {
    condition     = can(regex("^(\\*\\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)+[A-Za-z]{2,63}\\.?$", var.name))
    error_message = "The name must be a fully qualified DNS name such as mx.example.com."
  }
}

variable "type" {
  description = "Record type of the pool: A (nodes may also list an IPv6 address, published as AAAA), AAAA, or CNAME (each node lists one hostname)."
  type        = string
  default     = "A"

  validation {
    condition     = contains(["A", "AAAA", "CNAME"], var.type)
    error_message = "The type must be one of A, AAAA, CNAME."
  }
}

variable "ttl" {
  description = "TTL of every record set, in seconds. Keep it short: it bounds how long resolvers keep sending mail to a node that r53lb has drained."
  type        = number
  default     = 60

  validation {
    condition     = var.ttl >= 0 && var.ttl <= 2147483647 && floor(var.ttl) == var.ttl
    error_message = "The ttl must be a whole number of seconds between 0 and 2147483647."
  }
}

variable "nodes" {
  description = "The pool's nodes, keyed by node id (the record sets' SetIdentifier and r53lb's node id). address: one IP per family ([\"192.0.2.10\", \"2001:db8::10\"] for dual-stack) or one hostname for a CNAME pool. weight: the base weight (0-255) r53lb gives the node when healthy. initial_weight: the weight the record set is created with (default: weight; 0 keeps a new node out of service until r53lb has seen it healthy); Terraform never writes a weight again. probe_address: optional address that r53lb probes instead of the published one."
  type = map(object({
    address        = list(string)
    weight         = optional(number, 1)
    initial_weight = optional(number)
    probe_address  = optional(string)
  }))

  validation {
    condition     = length(var.nodes) > 0
    error_message = "A pool needs at least one node."
  }

  validation {
    condition     = alltrue([for id in keys(var.nodes) : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", id))])
    error_message = "Node ids are 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }

  validation {
    condition = alltrue([
      for node in values(var.nodes) : alltrue([
        for weight in [node.weight, node.initial_weight != null ? node.initial_weight : 0] :
        weight >= 0 && weight <= 255 && floor(weight) == weight
      ])
    ])
    error_message = "Node weights are whole numbers between 0 and 255 (Route 53's range)."
  }

  validation {
    condition = alltrue(flatten([
      for node in values(var.nodes) : [
        for address in node.address :
        can(regex("^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$", address))
        || (length(regexall(":", address)) > 0 && can(cidrhost("${address}/128", 0)))
        || can(regex("^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)+[A-Za-z]{2,63}\\.?$", address))
      ]
    ]))
    error_message = "Every node address must be an IPv4 address, an IPv6 address or a hostname."
  }

  validation {
    condition = alltrue([
      for node in values(var.nodes) :
      length(node.address) == 1 || (
        length(node.address) == 2
        && length([for address in node.address : address if length(regexall(":", address)) > 0]) == 1
        && length([for address in node.address : address if can(regex("^[0-9.]+$", address))]) == 1
      )
    ])
    error_message = "A node lists one address, or two for dual-stack: exactly one IPv4 and one IPv6 address."
  }

  validation {
    # Terraform writes an IPv4-mapped IPv6 address (::ffff:192.0.2.10) back as IPv4, which an
    # AAAA record cannot hold.
    condition = alltrue(flatten([
      for node in values(var.nodes) : [
        for address in node.address :
        length(regexall(":", address)) == 0 || !can(regex("^[0-9.]+$", cidrhost("${address}/128", 0)))
      ]
    ]))
    error_message = "An IPv6 address must not be IPv4-mapped (::ffff:192.0.2.10): list the IPv4 address itself."
  }
}

variable "pool_name" {
  description = "Name of the pool in the rendered r53lb config (used in `r53lb drain POOL/NODE`, logs and metrics). Default: the record name."
  type        = string
  default     = null

  validation {
    condition     = var.pool_name == null || can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]*$", var.pool_name))
    error_message = "The pool_name must be letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "checks" {
  description = "The pool's r53lb checks, passed through as-is into the rendered config, e.g. [{ smtp = { port = 25, starttls = true } }]. r53lb refuses a pool without checks, so set this to render a complete pool."
  type        = any
  default     = null
}

variable "pool_options" {
  description = "Further r53lb pool keys passed through as-is (min_in_service, max_drain_per_cycle, slow_start, interval, rise, fall, ...). The keys this module renders itself are refused here."
  type        = any
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.pool_options) : !contains(["name", "zone", "record", "type", "ttl", "mode", "nodes", "checks"], key)])
    error_message = "The pool_options must not set name, zone, record, type, ttl, mode, nodes or checks: the module renders those (use the checks variable for checks)."
  }
}
