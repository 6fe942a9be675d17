"""The asyncio primitives: TaskPool (bounded concurrency), TokenBucketLimiter (an exact,
first-come-first-served rate limit), BatchProcessor (Kafka-style batching), and the
histogram their stats share. They import nothing of perflab but ``perflab._validate``."""
