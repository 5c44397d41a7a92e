# cmake -DDOC=page.md -DEXAMPLE=file.cc -P CheckDocContains.cmake
# Fails unless the page contains the file's text verbatim.
file(READ "${DOC}" doc)
file(READ "${EXAMPLE}" example)
string(FIND "${doc}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${DOC} does not show ${EXAMPLE} as it is; copy the file into the page")
endif()
