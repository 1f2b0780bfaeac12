variable "zone_id" {
  description = "Id of the existing public hosted zone for domain (Z...): `aws route53 list-hosted-zones-by-name --dns-name example.com`."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,32}$", var.zone_id))
    error_message = "The zone_id must be a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "domain" {
  description = "The zone's domain; records are created as mx.DOMAIN, api.DOMAIN, click.DOMAIN and smtp.DOMAIN."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "The domain must be a lowercase domain name without a trailing dot, such as example.com."
  }
}

variable "region" {
  description = "AWS region for the provider (and of the SNS topic, if any)."
  type        = string
  default     = "us-east-1"
}

variable "sns_topic_arn" {
  description = "SNS topic for r53lb's alerts; null for none."
  type        = string
  default     = null
}

variable "probe_helo" {
  description = "Name r53lb sends in EHLO when it probes the SMTP servers. Use a name whose A record points at the controller, so the servers' logs make sense."
  type        = string
  default     = null
}

variable "replicas" {
  description = "Hostnames of the r53lb replicas when several run (two or more, in different networks); empty for one controller with its state in SQLite."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.replicas) != 1 && length(distinct(var.replicas)) == length(var.replicas)
    error_message = "Give no replica (one controller) or two or more distinct hostnames."
  }
}
