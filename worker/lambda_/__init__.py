"""Lambda's execution model: execution environments behind the Lambda Runtime API."""
