"""AWS clients: Route 53 (the only caller), SNS, DynamoDB; one session and error helper."""
