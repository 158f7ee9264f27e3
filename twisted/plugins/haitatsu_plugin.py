from twisted.application.service import ServiceMaker

haitatsu = ServiceMaker(
    "haitatsu",
    "haitatsu.tap",
    "A mailbox backend: SMTP, IMAP and a REST API over SQL metadata and a blob store.",
    "haitatsu",
)
