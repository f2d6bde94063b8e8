"""The triggers wing: what turns an event source into calls of a function.

`topics` (the durable SQLite topic log), `delivery` (KafkaTrigger/NATSTrigger delivery from those
topics, and the one `FunctionLink` every trigger sends through), `cron` (CronJobTriggers) and
`kafka_bridge` (KafkaTriggers on a real broker). They share one `backoff()`, one topic-name check
and one schedule reader (`kubeless_local.schedules`).
"""
