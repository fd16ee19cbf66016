"""Field mappings of the event formats real SDKs export (Sensors Analytics, the Segment spec); no I/O.

A source names a preset (`preset: sensors`) and may override any of its fields. The mappings follow
the vendors' documented data formats:
- Sensors Analytics (manual: "Data format"): one JSON object a line with `distinct_id`, `anonymous_id`,
  `login_id`, an `identities` map (`$identity_login_id`, `$identity_mobile`, `$identity_mp_openid`,
  `$identity_mp_unionid`, ...), `type` (track ...), `event`, `time` in epoch milliseconds, `_track_id`
  and nested `properties` (`$os`, `$lib`, `$device_id`, ... and the event's own keys);
- Segment spec (track / page): `messageId`, `type`, `userId`, `anonymousId`, `event` or `name`,
  `timestamp` (ISO-8601), `context` (`device.id`, `library.name`, `traits`), `properties`.
"""

from __future__ import annotations

# preset -> the model it feeds, its field mappings and identifier declarations (the same keys as a
# source's `fields` and `identifiers` in conf/sources.yaml; the source's own win)
PRESETS: dict[str, dict[str, dict]] = {
    "sensors": {
        "model": "app_events",
        "fields": {
            # Sensors has no event id: a delivery is identified by who, when and the SDK's _track_id.
            "event_id": {"expr": "concat_ws('-', distinct_id, `time`, `_track_id`)"},
            "device_id": {"from": "properties.$device_id"},
            "login_id": {"from": "identities.$identity_login_id"},
            "phone": {"from": "identities.$identity_mobile"},
            "unionid": {"from": "identities.$identity_mp_unionid"},
            "platform": {"from": "properties.$os", "values": {"iOS": "ios", "Android": "android"}},
            "event_name": {"from": "event", "values": {"$AppStart": "app_start", "$AppViewScreen": "page_view"},
                           "other": "keep"},
            "event_time": {"from": "time", "formats": ["epoch_ms"]},
            "props": {"from": "properties", "object": "$"},  # the SDK's own $-keys are not event properties
        },
        "identifiers": {
            "device_id": {"type": "device_id", "strength": "contact"},
            "login_id": {"type": "login_id", "strength": "verified"},
            "phone": {"type": "phone", "strength": "verified"},  # $identity_mobile: bound by SMS code
            "unionid": {"type": "unionid", "strength": "verified"},
        },
    },
    "segment": {
        "model": "app_events",
        "fields": {
            "event_id": {"from": "messageId"},
            "device_id": {"expr": "coalesce(`context.device.id`, anonymousId)"},
            "login_id": {"from": "userId"},
            "phone": {"from": "context.traits.phone"},
            "unionid": {"from": "context.traits.unionid"},
            "platform": {"from": "context.library.name",
                         "values": {"analytics.js": "web", "analytics-ios": "ios", "analytics-android": "android"}},
            # A page call is a page view; a track call names its event, the spec's semantic events
            # (E-commerce, Mobile, B2B SaaS specs) as the model's names.
            "event_name": {"expr": (
                "CASE WHEN type = 'page' THEN 'page_view' WHEN type = 'track' THEN CASE event "
                "WHEN 'Application Opened' THEN 'app_start' WHEN 'Products Searched' THEN 'search' "
                "WHEN 'Product Viewed' THEN 'view_item' WHEN 'Product Added' THEN 'add_cart' "
                "WHEN 'Order Completed' THEN 'pay_order' WHEN 'Signed In' THEN 'login' WHEN 'Signed Up' THEN 'register' "
                "WHEN 'Product Shared' THEN 'share' ELSE event END END")},
            "event_time": {"from": "timestamp", "formats": ["iso"]},
            "props": {"from": "properties"},
        },
        "identifiers": {
            "device_id": {"type": "device_id", "strength": "contact"},
            "login_id": {"type": "login_id", "strength": "verified"},
            "phone": {"type": "phone", "strength": "contact"},  # a trait the site was told, not proven
            "unionid": {"type": "unionid", "strength": "verified"},
        },
    },
}
