# The first code of every agent call, sent as `python3 -I -S -c <this> ~/.orchesjob/agent/agent-<sha16> rpc`.
# Standard library only, valid on CPython 3.6, and as short as can be: python compiles a -c text
# on every run (~0.7 us per byte), while orchesjob_boot (bootstrap.py, in the bundle) loads as
# bytecode. Before anything from the agent directory is imported it checks that ~/.orchesjob,
# ~/.orchesjob/agent and the directory itself are real directories of this user that nobody else
# can write to, and so are orchesjob_boot.py, the directory's __pycache__ and every file in it
# (the boot file's bytecode): nothing is imported before it is checked. Then orchesjob_boot
# checks the agent's files and their bytecode. Anything wrong: exit 86 and one line
# "orchesjob-agent-redeploy: <why>" on stderr, and the hook deploys again (deploy.py repairs).
# Dense on purpose (compile cost), hence:
# ruff: noqa: E401, E501, E701, E702, I001
import os,sys
d=os.path.expanduser(sys.argv[1]);b=os.path.dirname(d);c=os.path.join(d,"__pycache__")
def k(p,t):
 s=os.lstat(p)
 if s.st_uid!=os.getuid()or s.st_mode&0o170022!=t:raise OSError("not a %s of this user that only it can write: %s"%("directory"if t==16384 else"file",p))
try:
 for p in(os.path.dirname(b),b,d):k(p,16384)
 k(os.path.join(d,"orchesjob_boot.py"),32768)
 if os.path.lexists(c):
  k(c,16384)
  for n in os.listdir(c):k(os.path.join(c,n),32768)
 sys.path.insert(0,d);from orchesjob_boot import main
except Exception as e:sys.stderr.write("orchesjob-agent-redeploy: %s\n"%e);sys.stderr.flush();os._exit(86)
main(d)
