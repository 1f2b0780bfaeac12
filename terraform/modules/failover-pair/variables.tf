variable "zone_id" {
  description = "Id of the Route 53 hosted zone that holds the record (Z...)."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,32}$", var.zone_id))
    error_message = "The zone_id must be a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ (not the zone's name)."
  }
}

variable "name" {
  description = "Fully qualified DNS name that the active server answers under, e.g. smtp.example.com."
  type        = string

  validation {
    condition     = can(regex("^(\\*\\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)+[A-Za-z]{2,63}\\.?$", var.name))
    error_message = "The name must be a fully qualified DNS name such as smtp.example.com."
  }
}

variable "type" {
  description = "Record type: A (servers may also list an IPv6 address, published as AAAA), AAAA, or CNAME."
  type        = string
  default     = "A"

  validation {
    condition     = contains(["A", "AAAA", "CNAME"], var.type)
    error_message = "The type must be one of A, AAAA, CNAME."
  }
}

variable "ttl" {
  description = "TTL of the record sets, in seconds. It bounds how long clients keep using a failed primary after the switch."
  type        = number
  default     = 60

  validation {
    condition     = var.ttl >= 0 && var.ttl <= 2147483647 && floor(var.ttl) == var.ttl
    error_message = "The ttl must be a whole number of seconds between 0 and 2147483647."
  }
}

variable "primary" {
  description = "The server that carries the traffic while it is healthy: id (the SetIdentifier and r53lb node id), address (one IP per family, or one hostname for CNAME) and an optional probe_address. Created with weight 1."
  type = object({
    id            = string
    address       = list(string)
    probe_address = optional(string)
  })

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", var.primary.id))
    error_message = "The primary's id is 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "standby" {
  description = "The server that takes over when the primary fails; same shape as primary. Created with weight 0."
  type = object({
    id            = string
    address       = list(string)
    probe_address = optional(string)
  })

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", var.standby.id))
    error_message = "The standby's id is 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "pool_name" {
  description = "Name of the pool in the rendered r53lb config. Default: the record name."
  type        = string
  default     = null

  validation {
    condition     = var.pool_name == null || can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]*$", var.pool_name))
    error_message = "The pool_name must be letters, digits, '_', '.', '-', starting with a letter or digit."
  }
}

variable "checks" {
  description = "The pool's r53lb checks, passed through as-is, e.g. [{ smtp = { port = 25, starttls = true } }]. r53lb refuses a pool without checks."
  type        = any
  default     = null
}

variable "preempt" {
  description = "Fail back to the primary once it is healthy again (after preempt_delay). With false the standby stays active until it fails."
  type        = bool
  default     = true
}

variable "preempt_delay" {
  description = "How long the primary must have been healthy before r53lb fails back to it (r53lb duration: 30s, 5m, 1h)."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$", var.preempt_delay))
    error_message = "The preempt_delay must be a duration such as 30s, 5m or 1h."
  }
}

variable "pool_options" {
  description = "Further r53lb pool keys passed through as-is (interval, rise, fall, ...). The keys this module renders itself are refused here."
  type        = any
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.pool_options) : !contains(["name", "zone", "record", "type", "ttl", "mode", "nodes", "checks", "preempt", "preempt_delay"], key)])
    error_message = "The pool_options must not set name, zone, record, type, ttl, mode, nodes, checks, preempt or preempt_delay: the module renders those."
  }
}
