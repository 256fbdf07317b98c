import json, sqlite3, threading, os, subprocess
db = sqlite3.connect(':memory:')
db.execute('create table t (k integer primary key, v text)')
db.executemany('insert into t values (?, ?)', ((i, 'x' * (i % 500)) for i in range(20000)))
rows = db.execute('select k, length(v) from t where k % 7 = 0').fetchall()
blob = json.dumps({'rows': rows, 'big': ['y' * 100000 for _ in range(30)]})
del blob
def work(n):
    data = [bytearray(64 * 1024) for _ in range(n)]
    return sum(len(d) for d in data)
ts = [threading.Thread(target=work, args=(50,)) for _ in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print(subprocess.run(['true']).returncode, os.getpid() > 0)
