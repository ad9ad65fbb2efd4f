"""Email, by concern: `messages` (what an email says, written as MIME), `transport` (SMTP over
verified TLS, or `.eml` files) and `outbox` (the delivery pass over due rows, with retries)."""
