variable "create" {
  description = "Create the table. False for a single controller (its state stays in SQLite on its host)."
  type        = bool
  default     = true
}

variable "name" {
  description = "Name of the DynamoDB table: `cluster.table` in the r53lb config."
  type        = string
  default     = "r53lb"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.name))
    error_message = "The name must be 3-255 characters of letters, digits and _.- (DynamoDB's rule for table names)."
  }
}

variable "kms_key_arn" {
  description = "ARN of a customer managed KMS key for the table; null: DynamoDB's AWS managed key (aws/dynamodb)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "The kms_key_arn must be the ARN of a KMS key (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the table (the history and drains live there)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for the table."
  type        = map(string)
  default     = {}
}
