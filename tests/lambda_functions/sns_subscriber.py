"""A Lambda function subscribed through SNS: it reads the envelope from the body (unmodified)."""

import json
import os


def lambda_handler(event, context):
    failures = []
    for record in event["Records"]:
        envelope = json.loads(record["body"])
        try:
            order = json.loads(envelope["Message"])
            if order["amount"] <= 0:
                raise ValueError("amount must be positive")
            processed = {
                "order_id": order["order_id"],
                "topic": envelope["TopicArn"],
                "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
            }
            print("processed", json.dumps(processed))
        except Exception:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
