"""An independent verifier of Tollgate's webhook signatures: the reference
`standardwebhooks` implementation from PyPI. Reads a JSON document on
stdin: {"secret": ..., "headers": {...}, "body": "..."}; prints "ok" when
the signature verifies, or "refused: <reason>".
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

case = json.load(sys.stdin)
try:
    Webhook(case["secret"]).verify(case["body"], case["headers"])
    print("ok")
except WebhookVerificationError as e:
    print("refused:", e)
