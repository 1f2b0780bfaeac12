output "table_name" {
  description = "Name of the table (null when create is false)."
  value       = one(aws_dynamodb_table.state[*].name)
}

output "table_arn" {
  description = "ARN of the table, for the controller-iam module's state_table_arn (null when create is false)."
  value       = one(aws_dynamodb_table.state[*].arn)
}
