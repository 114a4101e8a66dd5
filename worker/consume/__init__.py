"""The consume path: receive → run → extend → settle, and the queue it talks to."""
