"""pymongo 4 for hyperopt 0.3.0's MongoTrials: the pymongo 3 calls that hyperopt.mongoexp makes.

hyperopt.mongoexp calls Cursor.count, Collection.count/insert/update/remove/find_and_modify and
Database.authenticate, all removed in pymongo 4: the driver fails with "'Cursor' object has no
attribute 'count'", a worker with "'Collection' object is not callable ... find_and_modify"
(len(MongoJobs) even returns 0 silently). install() puts the removed methods back on pymongo's
classes, as thin wrappers of their pymongo 4 replacements with the pymongo 3 meaning, and makes
mongoexp pass the user and password of a mongo://USER[:PASSWORD]@HOST:PORT/DB/jobs URL to
MongoClient (without :PASSWORD, MONGO_DB_PASSWORD's). The driver, the worker and each per-trial
worker process call install() before they touch MongoDB; nothing else in hks uses these names.
Delete this file when hyperopt stops needing it (tests/test_mongo.py says when).
"""
import os
import urllib.parse

import pymongo
from bson import SON
from hyperopt import mongoexp
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.cursor import Cursor


def cursor_count(cursor):
    """Cursor.count(): the documents its filter matches (mongoexp never sets skip or limit)."""
    spec = getattr(cursor, "_spec", None)  # the filter: pymongo >= 4.9 keeps it here,
    if spec is None:
        spec = cursor._Cursor__spec  # older pymongo 4 under a private name
    return cursor.collection.count_documents(spec or {})


def collection_count(collection):
    return collection.count_documents({})


def insert(collection, doc, check_keys=True):
    """Insert one document; like pymongo 3 it gets an _id, which is returned (the server checks
    keys)."""
    return collection.insert_one(doc).inserted_id


def update(collection, spec, document, upsert=False, multi=False):
    change = collection.update_many if multi else collection.update_one
    return change(spec, document, upsert=upsert).raw_result


def remove(collection, spec):
    return collection.delete_many(spec).raw_result


def find_and_modify(collection, query, update, upsert=False, new=False):
    """The document before the update (after it with new=True); None when an upsert inserted it."""
    after = ReturnDocument.AFTER if new else ReturnDocument.BEFORE
    return collection.find_one_and_update(query, update, upsert=upsert, return_document=after)


_connection_with_tunnel = mongoexp.connection_with_tunnel
# A request waits this long for an unreachable MongoDB before it fails (pymongo's default: 30 s),
# so that the waits around the driver's and the workers' requests
# (mongo_search.retry_while_unreachable) say so promptly.
SERVER_SELECTION_TIMEOUT_S = 5


def connection_with_tunnel(dbname, host="localhost", auth_dbname=None, port=27017, ssh=False,
                           user=None, pw=None):
    """mongoexp's connection, authenticated by MongoClient (pymongo 4 has no Database.authenticate).

    A URL with a user but no password (mongo://USER@HOST:PORT/DB: how hks starts per-trial
    processes) takes the password from MONGO_DB_PASSWORD, so that it never shows in a command line.
    """
    if ssh:  # no authentication on that path: hyperopt's own code works with pymongo 4
        return _connection_with_tunnel(dbname, host, auth_dbname, port, ssh, user, pw)
    auth = {}
    if user:
        # a URL carries them percent-encoded
        auth = {"username": urllib.parse.unquote(user),
                "password": (urllib.parse.unquote(pw) if pw is not None
                             else os.environ.get("MONGO_DB_PASSWORD"))}
        if auth["password"] is None:  # hyperopt's own last resort: ~/.hyperopt
            auth["password"] = mongoexp.read_pw()
        if auth_dbname:
            auth["authSource"] = auth_dbname  # otherwise pymongo's default: the admin database
    return pymongo.MongoClient(host, port, document_class=SON, w=1, journal=True,
                               serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_S * 1000,
                               **auth), None


def install():
    """Give pymongo 4 the pymongo 3 methods hyperopt.mongoexp calls (idempotent)."""
    Cursor.count = cursor_count
    Collection.count = collection_count
    Collection.insert = insert
    Collection.update = update
    Collection.remove = remove
    Collection.find_and_modify = find_and_modify
    mongoexp.connection_with_tunnel = connection_with_tunnel
