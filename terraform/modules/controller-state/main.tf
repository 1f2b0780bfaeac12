# The state of several r53lb replicas (r53lb's `cluster:`): one DynamoDB table holding the
# lease, each replica's heartbeat and opinion, the quorum view, drains, verdicts and history.
# r53lb's requests do not grow with the fleet (one write and one read per replica per
# heartbeat), so on-demand billing costs little and never throttles a quiet table.
resource "aws_dynamodb_table" "state" {
  count = var.create ? 1 : 0

  name                        = var.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = var.deletion_protection
  tags                        = var.tags

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  # History (90 days) and the heartbeats of replicas gone for good (1 day) expire by themselves.
  ttl {
    attribute_name = "expires"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}
