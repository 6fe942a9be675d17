"""The asyncio primitives: TaskPool (bounded concurrency, fixed or following an adaptive
limit from ``perflab.aio.limits``), TokenBucketLimiter (an exact, first-come-first-served
rate limit), BatchProcessor (Kafka-style batching), and the histogram their stats share.
They import nothing of perflab but ``perflab._validate``."""
