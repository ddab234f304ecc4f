"""Deletes the exchanges and queues `plan-queue serve` declared for one
exchange name: the queues `<exchange>.<TYPE>` of the given framework types,
`<exchange>.dead-letter` and `<exchange>.results`, then the exchanges
`<exchange>`, `<exchange>.dead-letter`, `<exchange>.results` and
`<exchange>.events`. Missing ones are fine.

Usage: python cleanup_amqp.py AMQP_URL EXCHANGE TYPE[,TYPE...]
"""

import sys

import pika


def delete(connection, kind, name):
    channel = connection.channel()
    try:
        if kind == "queue":
            channel.queue_delete(queue=name)
        else:
            channel.exchange_delete(exchange=name)
        print(f"deleted {kind} {name}")
    except pika.exceptions.ChannelClosedByBroker as e:
        # 404: it was never declared; the broker closed this channel only
        print(f"no {kind} {name} ({e.reply_code})")


def main(url, exchange, types):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        queues = [f"{exchange}.{t}" for t in types]
        queues += [f"{exchange}.dead-letter", f"{exchange}.results"]
        for queue in queues:
            delete(connection, "queue", queue)
        for name in (
            exchange,
            f"{exchange}.dead-letter",
            f"{exchange}.results",
            f"{exchange}.events",
        ):
            delete(connection, "exchange", name)
    finally:
        connection.close()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], [t for t in sys.argv[3].split(",") if t])
