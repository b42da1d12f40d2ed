"""A test-only MongoDB stand-in: pymongo 4 talks to it over TCP on 127.0.0.1, mongomock stores the
data.

No MongoDB server can be installed where the tests run, so this speaks just enough of the wire
protocol for hyperopt's MongoTrials, its workers and GridFS: the legacy OP_QUERY handshake that
pymongo opens each connection with, then OP_MSG commands (maxWireVersion 17, as MongoDB 6.0). It
announces no sessions, no compression and no streaming monitoring, so pymongo uses none of them.
One lock serializes all commands, so findAndModify (how workers reserve trials) is atomic, as on a
real server. With users={name: password} it asks for them as MongoDB does (SCRAM-SHA-256, the
mechanism pymongo picks; the accounts live in the admin database): only hello, ping and the SASL
conversation work before a connection authenticates, and a wrong password gets MongoDB's
"Authentication failed." (code 18). Not for anything but tests: no cursors beyond the first batch.

    python3 tests/mongo_standin.py 27017      # run one by hand
"""
import base64
import contextlib
import datetime
import hashlib
import hmac
import os
import socket
import socketserver
import struct
import sys
import threading

import bson
import mongomock
from bson.int64 import Int64
from bson.objectid import ObjectId
from mongomock import aggregate, filtering
from mongomock.collection import Collection
from pymongo import ReturnDocument

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
SCRAM_ITERATIONS = 4096  # the fewest pymongo accepts
OPEN_COMMANDS = {"hello", "ismaster", "ping", "buildinfo", "saslstart", "saslcontinue",
                 "endsessions"}
MAX_WIRE_VERSION = 17  # MongoDB 6.0: recent enough for pymongo 4, old enough to need no sessions
HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode


def _cstring(data, pos):
    end = data.index(b"\x00", pos)
    return data[pos:end].decode(), end + 1


def _bson_at(data, pos):
    size = struct.unpack_from("<i", data, pos)[0]
    return bson.decode(data[pos:pos + size]), pos + size


def _error(message, code=2, name="BadValue"):
    return {"ok": 0.0, "errmsg": message, "code": code, "codeName": name}


def _cursor(ns, docs):
    return {"cursor": {"id": Int64(0), "ns": ns, "firstBatch": list(docs)}, "ok": 1.0}


def _has_operators(update):
    return any(k.startswith("$") for k in update)


SCALARS = (str, int, float, type(None), ObjectId)
MISSING = object()


class _Unsure(Exception):
    """A document the fast test cannot judge (an array on a dotted path, a document compared): left
    to mongomock."""


def _at(doc, key):
    """The value at a dotted path (a numeric part indexes an array), MISSING where there is none."""
    value = doc
    for part in key.split("."):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else MISSING
        elif isinstance(value, list):
            raise _Unsure
        else:
            return MISSING
    return value


def _equal(have, value):
    """MongoDB's equality: null matches a missing field; an array matches one of its elements."""
    if isinstance(have, dict):
        raise _Unsure
    if have is MISSING:
        return value is None
    return have == value or isinstance(have, list) and value in have


def _simple_test(spec):
    """A fast test for the filters hyperopt and hks send (equality, $in, $ne, $exists, $or of those,
    on dotted paths too), or None for any other filter.

    mongomock's filter_applies takes ~16 us a document, this ~1 us: at 10,000 jobs every scan of the
    collection (each reserve, count, query by state) is otherwise the stand-in's bottleneck. A
    document it cannot judge is left to mongomock."""
    tests = []
    for key, value in spec.items():
        if key == "$or" and isinstance(value, list):
            branches = [_simple_test(b) if isinstance(b, dict) else None for b in value]
            if None in branches:
                return None
            tests.append((key, "or", branches))
        elif key.startswith("$"):
            return None
        elif isinstance(value, dict):
            (op, operand), = value.items() if len(value) == 1 else ((None, None),)
            scalars = isinstance(operand, list) and all(isinstance(v, SCALARS) for v in operand)
            if op == "$in" and scalars:
                tests.append((key, "in", set(operand)))
            elif op == "$ne" and isinstance(operand, SCALARS):
                tests.append((key, "ne", operand))
            elif op == "$exists" and isinstance(operand, bool):
                tests.append((key, "exists", operand))
            else:
                return None
        elif isinstance(value, SCALARS):
            tests.append((key, "eq", value))
        else:
            return None

    def judged(doc):
        for key, op, value in tests:
            if op == "or":
                if not any(branch(doc) for branch in value):
                    return False
                continue
            have = _at(doc, key)
            if op == "exists":
                if (have is not MISSING) != value:
                    return False
            elif op == "in":
                if isinstance(have, dict):
                    raise _Unsure
                if have is MISSING:
                    found = None in value
                elif isinstance(have, list):
                    found = any(h in value for h in have)
                else:
                    found = have in value
                if not found:
                    return False
            elif _equal(have, value) != (op == "eq"):
                return False
        return True

    def applies(doc):
        try:
            return judged(doc)
        except _Unsure:
            return filtering.filter_applies(spec, doc)
    return applies


def _iter_documents(collection, spec):
    """mongomock's scan of a collection, with a direct look-up by _id and the fast test above."""
    store = collection._store
    _id = spec.get("_id") if isinstance(spec, dict) else None
    if isinstance(_id, (ObjectId, str, int)):
        doc = store._documents.get(_id)
        return iter([doc] if doc is not None and filtering.filter_applies(spec, doc) else [])
    if isinstance(_id, dict) and set(_id) == {"$in"} and isinstance(_id["$in"], list):
        ids = [i for i in dict.fromkeys(_id["$in"]) if isinstance(i, (ObjectId, str, int))]
        docs = [store._documents.get(i) for i in ids]
        rest = {k: v for k, v in spec.items() if k != "_id"}
        applies = _simple_test(rest) or (lambda doc: filtering.filter_applies(rest, doc))
        return iter([doc for doc in docs if doc is not None and applies(doc)])
    applies = _simple_test(spec) if isinstance(spec, dict) else None
    if applies is None:
        return _mongomock_iter_documents(collection, spec)
    return (doc for doc in list(store._documents.values()) if applies(doc))


_mongomock_iter_documents = Collection._iter_documents
Collection._iter_documents = _iter_documents  # in the stand-in's process: its mongomock, faster


def _scram_fields(message):
    return dict(field.split("=", 1) for field in message.split(","))


class Scram:
    """The server's side of one SCRAM-SHA-256 conversation (RFC 5802, RFC 7677)."""

    def __init__(self, users, client_first):
        self.bare = client_first.split(",", 2)[2]  # after the gs2 header "n,,"
        fields = _scram_fields(self.bare)
        self.user, self.password = fields["n"], users.get(fields["n"])
        salt = os.urandom(16)
        self.first = f"r={fields['r']}{base64.b64encode(os.urandom(18)).decode()}," \
                     f"s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
        salted = hashlib.pbkdf2_hmac("sha256", (self.password or "").encode(), salt,
                                     SCRAM_ITERATIONS)
        self.client_key = hmac.digest(salted, b"Client Key", "sha256")
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")

    def final(self, client_final):
        """The server's final message, or None when the proof is wrong (or the user unknown)."""
        without_proof, proof = client_final.rsplit(",p=", 1)
        auth_message = ",".join((self.bare, self.first, without_proof)).encode()
        signature = hmac.digest(hashlib.sha256(self.client_key).digest(), auth_message, "sha256")
        expected = bytes(a ^ b for a, b in zip(self.client_key, signature))
        if self.password is None or not hmac.compare_digest(base64.b64decode(proof), expected):
            return None
        return "v=" + base64.b64encode(hmac.digest(self.server_key, auth_message,
                                                   "sha256")).decode()


class Store:
    """The commands pymongo sends, executed on a mongomock client, one at a time."""

    def __init__(self, users=None):
        self.client = mongomock.MongoClient()
        self.lock = threading.Lock()
        self.connections = 0
        self.users = users

    def run(self, db_name, body, session=None):
        """Run one command; session: the connection's state (its user, its SASL conversation)."""
        session = {} if session is None else session
        name = next(iter(body))
        if name.lower() in ("saslstart", "saslcontinue"):
            return self.authenticate(name.lower(), body, session)
        if self.users is not None and session.get("user") is None \
                and name.lower() not in OPEN_COMMANDS:
            return _error(f"command {name} requires authentication", 13, "Unauthorized")
        handler = getattr(self, "cmd_" + name.lower(), None)
        if handler is None:
            return _error(f"no such command: '{name}'", 59, "CommandNotFound")
        with self.lock:
            try:
                return handler(self.client[db_name], body[name], body)
            except mongomock.DuplicateKeyError as e:
                return _error(str(e), 11000, "DuplicateKey")
            # Any other error: reported to the client as a server error would be.
            except Exception as e:  # noqa: BLE001
                return _error(f"{type(e).__name__}: {e}")

    def cmd_hello(self, db, arg, body):
        self.connections += 1
        reply = {"helloOk": True, "isWritablePrimary": True, "ismaster": True,
                 "maxBsonObjectSize": 16 * 1024 ** 2,
                 "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000,
                 "localTime": datetime.datetime.now(datetime.timezone.utc),
                 "connectionId": self.connections,
                 "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False,
                 "ok": 1.0}
        if self.users is not None and "saslSupportedMechs" in body:
            reply["saslSupportedMechs"] = ["SCRAM-SHA-256"]
        return reply

    cmd_ismaster = cmd_hello

    def authenticate(self, name, body, session):
        failed = _error("Authentication failed.", 18, "AuthenticationFailed")
        if name == "saslstart":
            if self.users is None or body.get("mechanism") != "SCRAM-SHA-256":
                return failed
            session["scram"] = Scram(self.users, bytes(body["payload"]).decode())
            return {"conversationId": 1, "done": False,
                    "payload": bson.Binary(session["scram"].first.encode()), "ok": 1.0}
        scram = session.pop("scram", None)
        final = scram and scram.final(bytes(body["payload"]).decode())
        if not final:
            return failed
        session["user"] = scram.user
        return {"conversationId": 1, "done": True, "payload": bson.Binary(final.encode()),
                "ok": 1.0}

    def cmd_ping(self, db, arg, body):
        return {"ok": 1.0}

    def cmd_buildinfo(self, db, arg, body):
        return {"version": "6.0.0", "versionArray": [6, 0, 0, 0], "ok": 1.0}

    def cmd_endsessions(self, db, arg, body):
        return {"ok": 1.0}

    def cmd_find(self, db, coll, body):
        cursor = db[coll].find(body.get("filter") or {}, body.get("projection") or None)
        if body.get("sort"):
            cursor = cursor.sort(list(body["sort"].items()))
        if body.get("skip"):
            cursor = cursor.skip(body["skip"])
        if body.get("limit"):
            cursor = cursor.limit(abs(body["limit"]))
        return _cursor(f"{db.name}.{coll}", cursor)

    def cmd_insert(self, db, coll, body):
        for doc in body["documents"]:
            db[coll].insert_one(doc)
        return {"n": len(body["documents"]), "ok": 1.0}

    def cmd_update(self, db, coll, body):
        n = modified = 0
        upserted = []
        for i, spec in enumerate(body["updates"]):
            q, u, upsert = spec["q"], spec["u"], spec.get("upsert", False)
            if not _has_operators(u):
                result = db[coll].replace_one(q, u, upsert=upsert)
            elif spec.get("multi"):
                result = db[coll].update_many(q, u, upsert=upsert)
            else:
                result = db[coll].update_one(q, u, upsert=upsert)
            n += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": i, "_id": result.upserted_id})
        reply = {"n": n, "nModified": modified, "ok": 1.0}
        if upserted:
            reply["upserted"] = upserted
        return reply

    def cmd_delete(self, db, coll, body):
        n = 0
        for spec in body["deletes"]:
            delete = db[coll].delete_one if spec.get("limit") == 1 else db[coll].delete_many
            n += delete(spec["q"]).deleted_count
        return {"n": n, "ok": 1.0}

    def cmd_findandmodify(self, db, coll, body):
        query, sort, fields = body.get("query") or {}, body.get("sort"), body.get("fields")
        sort = list(sort.items()) if sort else None
        before = db[coll].find_one(query, sort=sort)
        if body.get("remove"):
            value = db[coll].find_one_and_delete(query, projection=fields, sort=sort)
            return {"lastErrorObject": {"n": int(value is not None)}, "value": value, "ok": 1.0}
        update, upsert = body["update"], body.get("upsert", False)
        return_after = ReturnDocument.AFTER if body.get("new") else ReturnDocument.BEFORE
        change = db[
            coll].find_one_and_update if _has_operators(update) else db[coll].find_one_and_replace
        value = change(query, update, projection=fields, sort=sort, upsert=upsert,
                       return_document=return_after)
        last = {"n": int(before is not None or upsert), "updatedExisting": before is not None}
        return {"lastErrorObject": last, "value": value, "ok": 1.0}

    def cmd_count(self, db, coll, body):
        return {"n": db[coll].count_documents(body.get("query") or {}), "ok": 1.0}

    def cmd_aggregate(self, db, coll, body):
        pipeline = body["pipeline"]
        if pipeline and "$match" in pipeline[0]:  # mongomock would copy every document first
            matched = _iter_documents(db[coll], pipeline[0]["$match"])
            if pipeline[1:] == [{"$group": {"_id": 1, "n": {"$sum": 1}}}]:  # count_documents
                n = sum(1 for _ in matched)
                return _cursor(f"{db.name}.{coll}", [{"_id": 1, "n": n}] if n else [])
            matched = [bson.decode(bson.encode(doc)) for doc in matched]
            rest = aggregate.process_pipeline(matched, db, pipeline[1:], None)
            return _cursor(f"{db.name}.{coll}", rest)
        return _cursor(f"{db.name}.{coll}", db[coll].aggregate(pipeline))

    def cmd_distinct(self, db, coll, body):
        return {"values": db[coll].distinct(body["key"], body.get("query") or {}), "ok": 1.0}

    def cmd_createindexes(self, db, coll, body):
        before = len(db[coll].index_information()) if coll in db.list_collection_names() else 0
        for index in body["indexes"]:
            db[coll].create_index(list(index["key"].items()), name=index.get("name"),
                                  unique=index.get("unique", False),
                                  sparse=index.get("sparse", False))
        return {"numIndexesBefore": before, "numIndexesAfter": len(db[coll].index_information()),
                "ok": 1.0}

    def cmd_listindexes(self, db, coll, body):
        if coll not in db.list_collection_names():
            return _error(f"ns does not exist: {db.name}.{coll}", 26, "NamespaceNotFound")
        indexes = [{"v": 2, "key": dict(info["key"]), "name": name,
                    **({"unique": True} if info.get("unique") else {})}
                   for name, info in db[coll].index_information().items()]
        return _cursor(f"{db.name}.{coll}", indexes)

    def cmd_drop(self, db, coll, body):
        db.drop_collection(coll)
        return {"ok": 1.0}

    def cmd_dropdatabase(self, db, arg, body):
        self.client.drop_database(db.name)
        return {"ok": 1.0}


class _Connection(socketserver.BaseRequestHandler):
    def setup(self):
        self.server.open.add(self.request)

    def finish(self):
        self.server.open.discard(self.request)

    def handle(self):
        self.session = {}  # this connection's user, once authenticated
        while True:
            header = self._read(HEADER.size)
            if header is None:
                return
            length, request_id, _, opcode = HEADER.unpack(header)
            payload = self._read(length - HEADER.size)
            if payload is None:
                return
            if opcode == OP_QUERY:
                self._reply_query(request_id, payload)
            elif opcode == OP_MSG:
                self._reply_msg(request_id, payload)
            else:
                # nothing else is ever sent to a server that announces neither compression nor more
                return

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _send(self, request_id, opcode, body):
        self.request.sendall(HEADER.pack(HEADER.size + len(body), 0, request_id, opcode) + body)

    def _reply_query(self, request_id, payload):
        """The legacy handshake: a command on admin.$cmd, answered with OP_REPLY."""
        namespace, pos = _cstring(payload, 4)  # after flags
        query, _ = _bson_at(payload, pos + 8)  # after numberToSkip and numberToReturn
        reply = self.server.store.run(namespace.split(".")[0], query, self.session)
        self._send(request_id, OP_REPLY, struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(reply))

    def _reply_msg(self, request_id, payload):
        flags = struct.unpack_from("<I", payload)[0]
        end = len(payload) - (4 if flags & 1 else 0)  # bit 0: a CRC-32C checksum closes the message
        pos, body, sequences = 4, {}, {}
        while pos < end:
            kind, pos = payload[pos], pos + 1
            if kind == 0:  # the command document
                body, pos = _bson_at(payload, pos)
            else:  # kind 1: a document sequence (insert's documents, update's updates, ...)
                size = struct.unpack_from("<i", payload, pos)[0]
                identifier, docs_at = _cstring(payload, pos + 4)
                docs = []
                while docs_at < pos + size:
                    doc, docs_at = _bson_at(payload, docs_at)
                    docs.append(doc)
                sequences[identifier] = docs
                pos += size
        body.update(sequences)
        reply = self.server.store.run(body.get("$db", "admin"), body, self.session)
        self._send(request_id, OP_MSG, struct.pack("<I", 0) + b"\x00" + bson.encode(reply))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, store):
        super().__init__(address, _Connection)
        # the data, and the sockets of the connections being served
        self.store, self.open = store, set()


class MongoStandin:
    """A stand-in server on 127.0.0.1 (port 0: any free port), served from a background thread.

        with MongoStandin() as server:
            url = f"mongo://127.0.0.1:{server.port}/hks/jobs"
        with MongoStandin(users={"hks": "secret"}) as server:   # connections must authenticate
            url = f"mongo://hks:secret@127.0.0.1:{server.port}/hks/jobs"
            server.stop()    # an outage: connections dropped, none accepted; the data stays
            server.start()   # back on the same port
    """

    def __init__(self, port=0, users=None):
        self.store = Store(users)
        self.server = _Server(("127.0.0.1", port), self.store)
        self.port = self.server.server_address[1]
        self.running = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def start(self):
        if self.server is None:
            self.server = _Server(("127.0.0.1", self.port), self.store)
        threading.Thread(target=self.server.serve_forever, name="mongo-standin",
                         daemon=True).start()
        self.running = True
        return self

    def stop(self):
        """Down, as a MongoDB that stops or a network cut: open connections are cut, new ones
        refused."""
        if self.running:
            self.server.shutdown()
            self.running = False
        self.server.server_close()
        for sock in list(self.server.open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server = None

    def close(self):
        if self.server is not None:
            self.stop()


if __name__ == "__main__":  # port 0: any free port, printed
    standin = MongoStandin(int(sys.argv[1]) if len(sys.argv) > 1 else 27017)
    print(f"MongoDB stand-in on 127.0.0.1:{standin.port} (Ctrl-C stops it)", flush=True)
    try:
        standin.server.serve_forever()
    except KeyboardInterrupt:
        pass
