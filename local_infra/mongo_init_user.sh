# The search's own MongoDB account. The mongo image sources this (from /docker-entrypoint-initdb.d/)
# once, on the first start of an empty hks_mongo_db volume, after it made the root account.
#
# The account may read and write the search's database MONGO_DB_NAME (the trials, and hyperopt's
# GridFS attachments, which live there too) and nothing else: no other database, no users, no
# server administration. It is stored in the admin database because that is where the driver and
# the workers authenticate: mongo_search.py and hyperopt's workers call MongoClient(username=...,
# password=...) without an authSource, and pymongo then uses "admin".
#
# The passwords travel in the environment, never on a command line. For a volume made before this
# script existed (whose root account is the old MONGO_DB_USER: name the search's account anew):
#   docker-compose -f local_infra/docker-compose.yml exec hks_mongo_db bash /docker-entrypoint-initdb.d/hks_user.sh
mongosh --quiet mongodb://127.0.0.1:27017/admin --eval '
  const env = process.env;
  db.auth(env.MONGO_INITDB_ROOT_USERNAME, env.MONGO_INITDB_ROOT_PASSWORD);
  db.createUser({user: env.MONGO_DB_USER, pwd: env.MONGO_DB_PASSWORD,
                 roles: [{role: "readWrite", db: env.MONGO_DB_NAME}]});'
echo "hks: MongoDB user $MONGO_DB_USER may read and write database $MONGO_DB_NAME only"
