output "r53lb_config" {
  description = "The r53lb config for this fleet (YAML). Save it: terraform output -raw r53lb_config > r53lb.yaml"
  value       = yamlencode(local.r53lb_config)
}

output "controller_policy_arn" {
  description = "ARN of the controller's least-privilege policy."
  value       = module.controller_iam.policy_arn
}

output "controller_instance_profile" {
  description = "Instance profile to launch the controller's EC2 instance with."
  value       = module.controller_iam.instance_profile_name
}

output "state_table_name" {
  description = "The cluster's DynamoDB table (null with one controller)."
  value       = module.controller_state.table_name
}
