-- Acknowledged alarms (issue 14): one row per acknowledged raise of the historian's nexus.alarms, named
-- by the tag's UNS path, the alarm kind and the raise's source time (the historian may be another database,
-- and its schema is ingestion's, so the acknowledgements live here). The first acknowledgement stays: a second
-- one is answered with it and changes nothing. Each is also an audit row (action alarm.ack).
CREATE TABLE core.alarm_acks (
    tag        text NOT NULL,                 -- enterprise/site/area/line/device/tag
    alarm      text NOT NULL CHECK (alarm IN ('high', 'low', 'rate', 'stuck')),
    raised_at  timestamptz NOT NULL,          -- the raise's source time, as nexus.alarms has it
    acked_at   timestamptz NOT NULL DEFAULT now(),
    acked_by   text NOT NULL,                 -- the audit "who": user:<name> or an API key's name
    comment    text NOT NULL DEFAULT '' CHECK (length(comment) <= 500),
    PRIMARY KEY (tag, alarm, raised_at)
);
