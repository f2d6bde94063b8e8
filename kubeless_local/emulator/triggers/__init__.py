"""The triggers wing: what turns an event source into calls of a function.

`topics` (the durable SQLite topic log), `subscriptions` (who receives a topic's events: trigger ×
selected function, named as Kubeless names the consumer group), `delivery` (KafkaTrigger/NATSTrigger
delivery from those topics, the one `FunctionLink` and the one "wait until the function serves, then
send" of every trigger), `cron` (CronJobTriggers), `kafka_bridge` (KafkaTriggers on a real broker) and
`interface` (the one `Topics` interface over the embedded log or the broker, and what an event that failed
every attempt becomes). They share one `backoff()`, one topic-name check and one schedule reader
(`kubeless_local.schedules`).
"""
