variable "name" {
  description = "Name of the IAM policy, and of the role and instance profile when create_role is true."
  type        = string
  default     = "r53lb-controller"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "The name must be 1-64 characters of letters, digits and +=,.@_- (IAM's rule for role names)."
  }
}

variable "records" {
  description = "Every record the controller may change: zone_id, name and type, one entry per record type. Pass the pool modules' managed_records outputs, concatenated."
  type = list(object({
    zone_id = string
    name    = string
    type    = string
  }))

  validation {
    condition     = length(var.records) > 0
    error_message = "Give at least one record: a controller that may change nothing needs no policy."
  }

  validation {
    condition     = alltrue([for record in var.records : can(regex("^Z[A-Z0-9]{1,32}$", record.zone_id))])
    error_message = "Every record's zone_id must be a Route 53 hosted zone id (Z...)."
  }

  validation {
    condition     = alltrue([for record in var.records : can(regex("^(\\*\\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.?$", record.name))])
    error_message = "Every record's name must be a DNS name of letters, digits, '-' and '_', with an optional leading '*.' wildcard label."
  }

  validation {
    condition     = alltrue([for record in var.records : contains(["A", "AAAA", "CNAME"], record.type)])
    error_message = "Every record's type must be A, AAAA or CNAME."
  }
}

variable "zones" {
  description = "The name of each zone of records, by zone id ({ Z0123456789ABCDEFGHIJ = \"example.com\" }): every change batch r53lb sends to a zone also rewrites the zone's fence, the TXT record _r53lb.<zone name>, which Terraform does not manage."
  type        = map(string)

  validation {
    condition     = alltrue([for id, zone in var.zones : can(regex("^Z[A-Z0-9]{1,32}$", id)) && can(regex("^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.?$", zone))])
    error_message = "Every key of zones must be a hosted zone id (Z...) and every value that zone's DNS name."
  }
}

variable "sns_topic_arn" {
  description = "ARN of the SNS topic r53lb publishes alerts to (notify.sns.topic_arn in its config). Null: no sns:Publish permission."
  type        = string
  default     = null

  validation {
    condition     = var.sns_topic_arn == null || can(regex("^arn:[a-z-]+:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\\.fifo)?$", var.sns_topic_arn))
    error_message = "The sns_topic_arn must be the ARN of one SNS topic (arn:aws:sns:REGION:ACCOUNT:NAME)."
  }
}

variable "state_table_arn" {
  description = "ARN of the cluster's DynamoDB table (the controller-state module's table_arn) when several replicas run; null for a single controller."
  type        = string
  default     = null

  validation {
    condition     = var.state_table_arn == null || can(regex("^arn:[a-z-]+:dynamodb:[a-z0-9-]+:[0-9]{12}:table/[A-Za-z0-9_.-]{3,255}$", var.state_table_arn))
    error_message = "The state_table_arn must be the ARN of one DynamoDB table (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME)."
  }
}

variable "state_replicas" {
  description = "The replicas' names (cluster.replica, default the hostname): with them the table access is limited to r53lb's partitions (dynamodb:LeadingKeys). Empty: the whole table."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.state_replicas : length(r) > 0 && length(r) <= 128])
    error_message = "Every replica name must be 1-128 characters."
  }
}

variable "allow_zone_lookup_by_name" {
  description = "Allow route53:ListHostedZonesByName (a list action that takes no resource), needed only when the r53lb config names a zone by its name rather than its id. The pool modules render zone ids, so the default is false."
  type        = bool
  default     = false
}

variable "create_role" {
  description = "Create an IAM role that EC2 instances assume, with the policy attached, and an instance profile for it. With false, attach policy_arn to your own role, user or group."
  type        = bool
  default     = true
}

variable "permissions_boundary" {
  description = "ARN of a permissions boundary for the role, if your account requires one."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary == null || can(regex("^arn:[a-z-]+:iam::([0-9]{12}|aws):policy/.+$", var.permissions_boundary))
    error_message = "The permissions_boundary must be the ARN of an IAM policy."
  }
}

variable "tags" {
  description = "Tags for the policy, the role and the instance profile."
  type        = map(string)
  default     = {}
}
