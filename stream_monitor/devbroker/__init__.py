"""Local single-node Kafka (KRaft) broker for development and tests."""
