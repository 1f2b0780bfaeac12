data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
  zone_ids  = sort(distinct([for record in var.records : record.zone_id]))

  # One statement per zone: r53lb sends one ChangeResourceRecordSets per zone, and
  # every name and type in that batch must be among this zone's managed records.
  # r53lb writes each change as DELETE of the current set plus CREATE with the new
  # weight (a compare-and-swap), never UPSERT. Route 53 puts the names in the
  # condition key normalized: lowercase, without the trailing dot, and every character
  # other than a-z 0-9 - _ . as a three-digit octal escape: a wildcard *.example.com is
  # \052.example.com there. The names are validated to hold no other special character.
  #
  # Every batch also DELETEs and CREATEs the zone's fence, the TXT record _r53lb.<zone
  # name> (r53lb's own: Terraform never manages it, so the two never fight over it): its
  # name and TXT join the zone's lists. The condition keys cannot tie a type to a name, so
  # TXT at the managed names, and their types at the fence name, are allowed too.
  fence_names = {
    for zone_id in local.zone_ids : zone_id => [
      for id, zone in var.zones : "_r53lb.${lower(trimsuffix(zone, "."))}" if id == zone_id
    ]
  }

  change_statements = [
    for zone_id in local.zone_ids : {
      Sid      = "ChangeManagedWeights${zone_id}"
      Effect   = "Allow"
      Action   = ["route53:ChangeResourceRecordSets"]
      Resource = ["arn:${local.partition}:route53:::hostedzone/${zone_id}"]
      Condition = {
        "ForAllValues:StringEquals" = {
          "route53:ChangeResourceRecordSetsNormalizedRecordNames" = sort(distinct(concat([
            for record in var.records : replace(lower(trimsuffix(record.name, ".")), "*", "\\052") if record.zone_id == zone_id
          ], local.fence_names[zone_id])))
          "route53:ChangeResourceRecordSetsRecordTypes" = sort(distinct(concat([
            for record in var.records : record.type if record.zone_id == zone_id
          ], ["TXT"])))
          "route53:ChangeResourceRecordSetsActions" = ["CREATE", "DELETE"]
        }
      }
    }
  ]

  read_statements = [
    {
      Sid      = "ReadManagedZones"
      Effect   = "Allow"
      Action   = ["route53:GetHostedZone", "route53:ListResourceRecordSets"] # GetHostedZone: the name servers `r53lb verify` asks
      Resource = [for zone_id in local.zone_ids : "arn:${local.partition}:route53:::hostedzone/${zone_id}"]
    },
    {
      Sid      = "WaitForChanges"
      Effect   = "Allow"
      Action   = ["route53:GetChange"]
      Resource = ["arn:${local.partition}:route53:::change/*"]
    },
  ]

  lookup_statements = [
    for allowed in [var.allow_zone_lookup_by_name] : {
      Sid      = "FindZonesByName"
      Effect   = "Allow"
      Action   = ["route53:ListHostedZonesByName"]
      Resource = ["*"]
    } if allowed
  ]

  sns_topic_arns = var.sns_topic_arn == null ? [] : [var.sns_topic_arn]

  notify_statements = [
    for topic_arn in local.sns_topic_arns : {
      Sid      = "PublishAlerts"
      Effect   = "Allow"
      Action   = ["sns:Publish"]
      Resource = [topic_arn]
    }
  ]

  state_table_arns = var.state_table_arn == null ? [] : [var.state_table_arn]

  # Several replicas (r53lb's `cluster:`): items of the one table, and only the partitions
  # r53lb uses when the replicas are named (dynamodb:LeadingKeys). TransactWriteItems (the
  # heartbeat that renews the lease) is authorised as its PutItem and UpdateItem parts.
  state_partitions = concat(["live", "view", "drain", "check", "event"], [for r in var.state_replicas : "meta#${r}"])

  state_statements = [
    for table_arn in local.state_table_arns : merge({
      Sid      = "ClusterState"
      Effect   = "Allow"
      Action   = ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
      Resource = [table_arn]
      }, length(var.state_replicas) == 0 ? {} : {
      Condition = {
        "ForAllValues:StringEquals" = {
          "dynamodb:LeadingKeys" = local.state_partitions
        }
      }
    })
  ]

  policy = {
    Version   = "2012-10-17"
    Statement = concat(local.read_statements, local.change_statements, local.lookup_statements, local.notify_statements, local.state_statements)
  }
}

resource "aws_iam_policy" "controller" {
  name        = var.name
  description = "r53lb: read the managed zones and change the weights of the managed records only"
  policy      = jsonencode(local.policy)
  tags        = var.tags

  lifecycle {
    precondition {
      condition     = alltrue([for zone_id in local.zone_ids : contains(keys(var.zones), zone_id)])
      error_message = "Give every zone of records its name in zones (zone id => name): r53lb writes its fence, the TXT record _r53lb.<zone name>, in every batch to a zone."
    }
  }
}

resource "aws_iam_role" "controller" {
  count = var.create_role ? 1 : 0

  name                 = var.name
  description          = "r53lb controller on EC2"
  permissions_boundary = var.permissions_boundary
  tags                 = var.tags

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "EC2AssumesRole"
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "controller" {
  count = var.create_role ? 1 : 0

  role       = aws_iam_role.controller[0].name
  policy_arn = aws_iam_policy.controller.arn
}

resource "aws_iam_instance_profile" "controller" {
  count = var.create_role ? 1 : 0

  name = var.name
  role = aws_iam_role.controller[0].name
  tags = var.tags
}
