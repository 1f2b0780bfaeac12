terraform {
  required_version = ">= 1.3"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  # Route 53 and IAM are global; the region only matters for the SNS topic.
  region = var.region
}
