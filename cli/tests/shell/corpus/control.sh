# Compound commands (XCU 2.9.4): if/elif/else, for, while, until, case, break, continue.
for n in 1 2 3 4; do
  if [ "$n" -eq 1 ]; then echo "$n one"
  elif [ "$n" -eq 2 ]; then echo "$n two"
  else echo "$n many"
  fi
done
if false; then :; fi; echo "if with no branch taken: $?"
if false; then :; else (exit 3); fi; echo "else status $?"
for w in "a b" c; do echo "word [$w]"; done
set -- x "y z"
for arg; do echo "arg [$arg]"; done
for e in; do echo never; done; echo "empty for $?"
i=0
while [ $i -lt 3 ]; do i=$((i + 1)); echo "while $i"; done
until [ $i -eq 0 ]; do i=$((i - 1)); echo "until $i"; done
for i in 1 2 3 4 5 6; do
  [ $i -eq 2 ] && continue
  [ $i -eq 5 ] && break
  echo "loop $i"
done
for i in 1 2; do for j in a b c; do [ $j = b ] && continue 2; echo "$i$j"; done; done
for f in report.txt image.PNG Makefile .hidden a.b.c x; do
  case $f in
    *.txt) echo "$f: text" ;;
    *.[Pp][Nn][Gg]) echo "$f: image" ;;
    Makefile|makefile) echo "$f: make" ;;
    .*) echo "$f: hidden" ;;
    ?.*.?) echo "$f: dotted" ;;
    *) echo "$f: other" ;;
  esac
done
case x in y) echo no ;; esac; echo "case no match $?"
case "a*b" in 'a*b') echo "quoted pattern is literal" ;; esac
case abc in a\*c) echo wrong ;; a*c) echo "escaped star" ;; esac
pat='a*'; case abc in $pat) echo "pattern from variable" ;; esac
while false; do :; done; echo "while never ran $?"
# The standard's case example (XCU 2.9.4.3)
for cc in cc gcc c89 c99 tcc; do
  case $cc in
    cc|c89) echo "$cc: posix name" ;;
    c99) echo "$cc: newer" ;;
    *) echo "$cc: other" ;;
  esac
done
