"""The triggers wing: what turns an event source into calls of a function.

`topics` (the durable SQLite topic log), `subscriptions` (who receives a topic's events: trigger ×
selected function, named as Kubeless names the consumer group), `delivery` (KafkaTrigger/NATSTrigger
delivery from those topics, the one `FunctionLink` and the one "wait until the function serves, then
send" of every trigger), `cron` (CronJobTriggers) and `kafka_bridge` (KafkaTriggers on a real broker).
They share one `backoff()`, one topic-name check and one schedule reader (`kubeless_local.schedules`).
"""
