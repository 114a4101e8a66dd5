# 1. A local SQS and SNS (moto), in a terminal of its own; it prints the line to export below
worker local

# In another terminal, in the directory of myhandlers.py:
export WORKER_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export WORKER_QUEUE_NAME=orders

# 2. An SNS topic, the queue subscribed to it, and the queue's DLQ
worker provision
# 3. Two orders through the topic: one your handler takes, one it refuses
worker publish '{"order_id": "o-1", "amount": 5}' '{"order_id": "o-2", "amount": "lots"}'
# 4. Your handler on the queue, until it has been idle for 3 seconds
worker run --handler myhandlers:handle --exit-when-idle 3
# 5. What failed: the refused order, in the DLQ
worker dlq peek
