"""The digest's baseline: `python bench/rawsmtp.py PORT SIZES` sends one pre-built message per
line of SIZES (each exactly that many bytes) over one smtplib connection, and prints the time
the sending took as JSON."""

import json
import smtplib
import sys
import time

LINE = "x" * 74 + "\r\n"  # quoted-printable lines, as SIT's bodies are


def prebuilt(number: int, size: int) -> bytes:
    head = (
        "From: SIT <sit@localhost>\r\n"
        f"To: demo{number}@example.com\r\n"
        "Subject: Your SIT digest: 10 issues assigned to you\r\n"
        f"Message-ID: <raw-{number}@bench>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    body = LINE * (size // len(LINE) + 1)
    return (head + body).encode()[:size]


def main() -> None:
    port = int(sys.argv[1])
    with open(sys.argv[2]) as sizes_file:
        sizes = [int(line) for line in sizes_file if line.strip()]
    messages = [(f"demo{n}@example.com", prebuilt(n, size)) for n, size in enumerate(sizes, 1)]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for to, data in messages:
            smtp.sendmail("sit@localhost", [to], data)
    seconds = time.perf_counter() - start
    print(json.dumps({"messages": len(messages), "seconds": seconds}))


if __name__ == "__main__":
    main()
