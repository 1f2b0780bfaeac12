output "policy_arn" {
  description = "ARN of the controller's policy; attach it to any role, user or group that runs r53lb."
  value       = aws_iam_policy.controller.arn
}

output "policy_json" {
  description = "The policy document, as JSON."
  value       = jsonencode(local.policy)
}

output "role_name" {
  description = "Name of the EC2 role (null when create_role is false)."
  value       = one(aws_iam_role.controller[*].name)
}

output "role_arn" {
  description = "ARN of the EC2 role (null when create_role is false)."
  value       = one(aws_iam_role.controller[*].arn)
}

output "instance_profile_name" {
  description = "Name of the instance profile to launch the controller's EC2 instance with (null when create_role is false)."
  value       = one(aws_iam_instance_profile.controller[*].name)
}
