"""A local stand-in for the Telegram Bot API, so the bot can run and be tested offline.

A development tool, kept apart from the bot: `python -m bot` starts it when TELEGRAM_TOKEN is
unset, ``python -m sandbox`` runs it alone, and the production image leaves it out. It takes
nothing from the bot but ``bot.logs.RedactFilter`` (a stdlib-only leaf), and nothing from
``model/``.

Point python-telegram-bot at it with::

    ApplicationBuilder().token(TOKEN).base_url(f"{url}/bot").base_file_url(f"{url}/file/bot")

Bot API side (``/bot<token>/<method>``, GET or POST; query string, urlencoded, multipart or
JSON bodies): getMe, logOut, close, getUpdates, setWebhook, deleteWebhook, getWebhookInfo,
sendMessage, sendPhoto, sendDocument, sendChatAction, getFile, editMessageText,
editMessageCaption, editMessageReplyMarkup, deleteMessage, deleteMessages,
answerCallbackQuery, setMyCommands, getMyCommands, deleteMyCommands, setChatMenuButton,
getChatMenuButton. Files download from ``/file/bot<token>/<file_path>``. Errors use
Telegram's shapes and wording. Notes:

* Only one getUpdates poller is expected: when a second getUpdates arrives while one is
  waiting, the older one is answered at once with an empty list (Telegram would answer 409).
* setWebhook is remembered (getUpdates then answers 409 like Telegram) but nothing is pushed.

Test API side (``/_sandbox/...``, JSON ``{"ok": true, ...}`` or ``{"ok": false,
"description"}`` with 400/404): ``POST send``, ``POST press``, ``GET chats``,
``GET chats/{chat_id}/messages``, ``GET events?since=&timeout=&chat_id=``,
``GET calls?method=``, ``GET files/{file_id}``, ``POST reset``, ``GET info``, and fault
injection: ``POST flood`` (429s) and ``POST fail`` (the next calls of a method fail).
See ``sandbox.testapi`` for the fields. ``send`` and ``press`` with ``wait`` hold the
response until the bot reacted, then until it has been idle in that chat for ``settle``
seconds (default 0.25) so that an answer followed by an edit is reported together.

Example: ``curl -F photo=@cat.jpg "http://127.0.0.1:8088/_sandbox/send?wait=30"``.
"""

from sandbox.server import Sandbox, SandboxThread

__all__ = ["Sandbox", "SandboxThread"]
